"""``kill -9`` in the middle of ``fit``: ``last.ckpt`` stays loadable and ``ckpt_path=last`` finishes the
run in place (``preprocess`` killed mid-way: ``test_cache.test_resume_after_kill``)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from lightning_tts.learners import load_learner


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.1)


def test_fit_killed_with_sigkill_resumes_from_last(tmp_path: Path, synthetic_root: Path) -> None:
    runs = tmp_path / "runs"
    args = [sys.executable, "-m", "lightning_tts", "fit", "--no-progress", "learner.name=multispeaker",
            f"data.root={synthetic_root}", f"data.cache_dir={tmp_path / 'cache'}", f"trainer.default_root_dir={runs}",
            "data.splits.val=2", "data.splits.test=2", "data.batch_size=4", "data.preprocess_workers=1",
            "trainer.max_steps=40", "trainer.val_check_interval=5", "trainer.limit_val_batches=1",
            "trainer.check_val_every_n_epoch=null", "fewshot.every=0"]
    last = runs / "multispeaker" / "version_0" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def saved_past(step: int) -> bool:
        try:
            return last.is_file() and torch.load(last, weights_only=True)["global_step"] >= step
        except Exception:  # caught between replace and read on a slow disk: try again
            return False

    _wait_for(lambda: saved_past(10), proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    killed_at = torch.load(last, weights_only=True)["global_step"]
    assert 10 <= killed_at < 40
    load_learner(last)  # whatever the moment of the kill, last.ckpt is whole
    assert not list(last.parent.glob("*.tmp*"))
    done = subprocess.run([*args, "ckpt_path=last"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert torch.load(last, weights_only=True)["global_step"] == 40
    assert not (runs / "multispeaker" / "version_1").exists()  # resumed in place
