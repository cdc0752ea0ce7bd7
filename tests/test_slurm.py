"""``slurm`` writes a runnable sbatch script; under a (fake) SLURM, SIGUSR1 checkpoints and requeues
through Lightning's handler, and the requeued job resumes in the same run directory."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from lightning_tts.cli import main


def test_slurm_command_writes_script_and_config(tmp_path: Path, capsys) -> None:
    out = tmp_path / "job"
    assert main(["slurm", "--out", str(out), "--nodes", "2", "--gpus-per-node", "4", "--time", "1-00:00:00",
                 "--partition", "gpu", "learner.name=multispeaker", "trainer.max_steps=5000"]) == 0
    script = (out / "lightning_tts.sbatch").read_text()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gres=gpu:4", "#SBATCH --requeue",
                 "#SBATCH --signal=SIGUSR1@120", "#SBATCH --partition=gpu", "#SBATCH --time=1-00:00:00"):
        assert line in script, line
    assert f"srun python -m lightning_tts fit --config {(out / 'config.yaml').resolve()}" in script
    cfg = OmegaConf.load(out / "config.yaml")
    assert (cfg.trainer.num_nodes, cfg.trainer.devices, cfg.trainer.strategy, cfg.trainer.accelerator) == (2, 4, "ddp", "gpu")
    assert cfg.learner.name == "multispeaker" and cfg.trainer.max_steps == 5000
    assert subprocess.run(["bash", "-n", str(out / "lightning_tts.sbatch")]).returncode == 0
    for bad, message in ((["--nodes", "0"], "--nodes must be >= 1"), (["--time", "forever"], "--time must be SLURM time"),
                         (["--gpus-per-node", "2", "--tasks-per-node", "3"], "must equal --gpus-per-node"),
                         (["--job-name", "a b"], "--job-name may hold")):
        assert main(["slurm", "--out", str(tmp_path / "bad"), *bad]) == 2
        assert message in capsys.readouterr().err


def test_sigusr1_checkpoints_requeues_and_the_requeued_job_resumes(tmp_path: Path, synthetic_root: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "scontrol.log"
    (fake_bin / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    (fake_bin / "scontrol").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NAME": "lt",
           "SLURM_NODELIST": "localhost", "PYTHONUNBUFFERED": "1"}
    runs = tmp_path / "runs"
    args = [sys.executable, "-m", "lightning_tts", "fit", "--no-progress", "learner.name=multispeaker",
            f"data.root={synthetic_root}", f"data.cache_dir={tmp_path / 'cache'}", f"trainer.default_root_dir={runs}",
            "data.splits.val=2", "data.splits.test=2", "data.batch_size=4", "data.preprocess_workers=1",
            "trainer.max_steps=60", "trainer.val_check_interval=1000", "trainer.limit_val_batches=1",
            "trainer.log_every_n_steps=1", "fewshot.every=0", "trainer.accelerator=cpu"]
    run_dir = runs / "multispeaker" / "slurm_4242"
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = run_dir / "logs" / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 6):
        time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGUSR1)  # what SLURM sends --grace seconds before the limit
    deadline = time.time() + 120
    while time.time() < deadline and not calls.is_file():
        time.sleep(0.2)
    proc.kill()  # SLURM ends the allocation after the requeue
    output = proc.communicate()[0]
    assert calls.read_text().split() == ["requeue", "4242"], output[-3000:]
    hpc = list(run_dir.glob("hpc_ckpt_*.ckpt"))
    assert len(hpc) == 1, output[-3000:]
    saved_step = torch.load(hpc[0], weights_only=True)["global_step"]
    assert 0 < saved_step < 60
    # the requeued job: same job id -> same run directory -> Lightning restores the hpc checkpoint
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Restored all states from the checkpoint" in done.stderr + done.stdout
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 60
