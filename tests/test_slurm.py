"""``slurm`` writes a runnable sbatch script; under a (fake) SLURM, SIGUSR1 checkpoints, requeues and
stops at the end of a step agreed by every rank, and the requeued job resumes in the same run directory."""
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
                 "#SBATCH --signal=SIGUSR1@90", "#SBATCH --partition=gpu", "#SBATCH --time=1-00:00:00"):
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


def _launch(args: list[str], env: dict[str, str], ranks: int) -> list[subprocess.Popen]:
    """Start ``ranks`` processes as ``srun`` would: one per task, with its SLURM rank variables."""
    procs = []
    for rank in range(ranks):
        task_env = {**env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)}
        procs.append(subprocess.Popen(args, env=task_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def test_sigusr1_checkpoints_requeues_and_the_requeued_job_resumes(tmp_path: Path, synthetic_root: Path) -> None:
    """Two tasks started by hand with SLURM's variables and a fake scontrol: SIGUSR1 to both, half a
    second apart -> one hpc checkpoint, one ``scontrol requeue <job id>``, both tasks exit 138; the relaunched job resumes at the saved step."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "scontrol.log"
    (fake_bin / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    (fake_bin / "scontrol").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2",
           "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_NODEID": "0", "SLURM_JOB_NAME": "lt",
           "SLURM_NODELIST": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
    runs = tmp_path / "runs"
    overrides = [f"data.root={synthetic_root}", f"data.cache_dir={tmp_path / 'cache'}", "data.preprocess_workers=1"]
    assert main(["preprocess", "--no-progress", *overrides]) == 0  # both tasks then find the cache ready
    args = [sys.executable, "-m", "lightning_tts", "fit", "--no-progress", "learner.name=multispeaker", *overrides,
            f"trainer.default_root_dir={runs}", "data.splits.val=2", "data.splits.test=2", "data.batch_size=4",
            "trainer.max_steps=100000", "trainer.val_check_interval=100000", "trainer.limit_val_batches=1",
            "trainer.log_every_n_steps=1", "fewshot.every=0", "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.strategy=ddp"]
    run_dir = runs / "multispeaker" / "slurm_4242"
    procs = _launch(args, env, 2)
    metrics = run_dir / "logs" / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline and not metrics.is_file():  # the loggers are set up: training has started
        time.sleep(0.5)
        assert all(p.poll() is None for p in procs), procs[0].communicate()[0][-3000:]
    time.sleep(1.0)  # a few steps (max_steps is out of reach, so the job is still training when the signal comes)
    procs[0].send_signal(signal.SIGUSR1)  # SLURM signals every task; one alone must be enough (the ranks agree)
    time.sleep(0.5)
    procs[1].send_signal(signal.SIGUSR1)
    try:  # the tasks save, requeue and stop by themselves, at the same step
        outputs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    output = outputs[0]
    assert [p.returncode for p in procs] == [128 + signal.SIGUSR1] * 2, output[-3000:]
    assert "requeued SLURM job 4242" in output, output[-3000:]
    assert calls.read_text().split() == ["requeue", "4242"], output[-3000:]
    hpc = list(run_dir.glob("hpc_ckpt_*.ckpt"))
    assert len(hpc) == 1, output[-3000:]
    saved_step = torch.load(hpc[0], weights_only=True)["global_step"]
    assert saved_step >= 1
    # the requeued job: same job id -> same run directory -> Lightning restores the hpc checkpoint
    # (it stops 10 steps later here, instead of running to the first job's max_steps)
    procs = _launch([*args, f"trainer.max_steps={saved_step + 10}"], env, 2)
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:]
    assert "Restored all states from the checkpoint" in outputs[0]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == saved_step + 10
