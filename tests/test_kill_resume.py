"""Stopping ``fit`` from outside. SIGTERM and SIGINT save the step reached to ``last.ckpt`` and exit
143/130 (one process, with DataLoader workers, and every rank of 2-process CPU DDP); ``kill -9`` in the middle of a checkpoint
write leaves ``last.ckpt`` whole; ``ckpt_path=last`` then continues the run in place.
(``preprocess`` killed mid-way: ``test_cache.test_resume_after_kill``.)
"""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch

from lightning_tts.callbacks.checkpoint import PARTIAL_PREFIX
from lightning_tts.cli import main
from lightning_tts.learners import load_learner

#: Logged by rank 0 once every rank has its SIGTERM/SIGINT handlers: training is running from here on.
ARMED = "SIGTERM or Ctrl-C from now on saves"
TIMEOUT_S = 300

# `python -c SLOW_LAST_WRITE fit ...`: `fit`, except that a write over an existing last.ckpt stops
# half-way (the bytes so far flushed to disk), touches $WRITING and sleeps until the test's kill -9.
SLOW_LAST_WRITE = """
import io, os, sys, time
from pathlib import Path

import torch

from lightning_tts.callbacks.checkpoint import AtomicCheckpointIO
from lightning_tts.cli import main

save_checkpoint, torch_save = AtomicCheckpointIO.save_checkpoint, torch.save


def half_then_hang(obj, f):
    data = io.BytesIO()
    torch_save(obj, data)
    f.write(data.getvalue()[: len(data.getvalue()) // 2])
    f.flush()
    os.fsync(f.fileno())
    Path(os.environ["WRITING"]).touch()
    time.sleep(3600)


def slow_over_last(self, checkpoint, path, storage_options=None):
    if Path(path).name == "last.ckpt" and Path(path).is_file():
        torch.save = half_then_hang
    return save_checkpoint(self, checkpoint, path, storage_options)


AtomicCheckpointIO.save_checkpoint = slow_over_last
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> Path:
    """The synthetic corpus's features, built once for this module's runs."""
    cache = tmp_path_factory.mktemp("kill_resume") / "cache"
    assert main(["preprocess", "--no-progress", f"data.root={synthetic_root}", f"data.cache_dir={cache}",
                 "data.preprocess_workers=1"]) == 0
    return cache


def _fit_args(runs: Path, corpus: Path, cache: Path, *overrides: str) -> list[str]:
    """``fit`` of the small baseline on the synthetic corpus, logging every step."""
    return ["fit", "--no-progress", "learner.name=multispeaker", f"data.root={corpus}", f"data.cache_dir={cache}",
            f"trainer.default_root_dir={runs}", "data.splits.val=2", "data.splits.test=2", "data.batch_size=4",
            "trainer.limit_val_batches=1", "trainer.check_val_every_n_epoch=null", "trainer.log_every_n_steps=1",
            "fewshot.every=0", *overrides]


class Fit:
    """A ``fit`` subprocess in its own session, its output (stdout and stderr) read by a thread."""

    def __init__(self, args: list[str], python_args: tuple[str, ...] = ("-m", "lightning_tts"),
                 env: Optional[dict[str, str]] = None) -> None:
        self.proc = subprocess.Popen([sys.executable, *python_args, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def wait_until(self, ready: Callable[[], bool], what: str) -> None:
        """Poll ``ready()`` until it is true; fail if the process ends first or after ``TIMEOUT_S``."""
        deadline = time.monotonic() + TIMEOUT_S
        while not ready():
            assert self.proc.poll() is None, f"fit ended ({self.proc.returncode}) before {what}:\n{self.output[-4000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.output[-4000:]}"
            time.sleep(0.1)

    def finish(self) -> int:
        """Wait for the process (and the end of its output); its exit code."""
        code = self.proc.wait(timeout=TIMEOUT_S)
        self._reader.join(timeout=TIMEOUT_S)
        return code

    def kill_session(self) -> None:
        """SIGKILL the process and its session (the DDP rank it started), if it is still running."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=TIMEOUT_S)


@pytest.fixture
def fits():
    """Start ``Fit``s; whatever is still running at the end of the test is killed."""
    started: list[Fit] = []

    def start(*args, **kwargs) -> Fit:
        started.append(Fit(*args, **kwargs))
        return started[-1]

    yield start
    for fit in started:
        fit.kill_session()


def _step(ckpt: Path) -> int:
    return torch.load(ckpt, weights_only=True)["global_step"]


def _train_rows(run_dir: Path) -> int:
    """Training steps logged in the run's ``metrics.csv``."""
    with open(run_dir / "logs" / "metrics.csv", newline="") as f:
        return sum(1 for row in csv.DictReader(f) if row.get("train/loss"))


def _resume_and_check(args: list[str], run_dir: Path, saved: int, more: int = 3) -> None:
    """``ckpt_path=last`` continues from ``saved``: Lightning restores that file and the run takes ``more`` steps."""
    last = run_dir / "checkpoints" / "last.ckpt"
    before = _train_rows(run_dir) if (run_dir / "logs" / "metrics.csv").is_file() else 0
    done = subprocess.run([sys.executable, "-m", "lightning_tts", *args, "ckpt_path=last",
                           f"trainer.max_steps={saved + more}"], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"Restored all states from the checkpoint at {last}" in done.stderr
    assert _step(last) == saved + more
    # the earlier rows are kept, and only the remaining steps were trained (a restart would add saved + more)
    assert _train_rows(run_dir) == before + more
    assert not (run_dir.parent / f"version_{int(run_dir.name.split('_')[1]) + 1}").exists()  # resumed in place


def _stopped_by(fit, signum: signal.Signals, runs: Path) -> tuple[Path, Path, int]:
    """(run directory, its last.ckpt, the step saved) after ``fit`` exited with ``signum``'s code."""
    assert fit.finish() == 128 + signum, fit.output[-4000:]
    run_dir = runs / "multispeaker" / "version_0"
    last = run_dir / "checkpoints" / "last.ckpt"
    saved = _step(last)
    assert saved > 0
    return run_dir, last, saved


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_the_step_reached_and_exits_nonzero(tmp_path: Path, synthetic_root: Path, cache: Path, fits,
                                                         signum: signal.Signals) -> None:
    """No validation before the signal (so no checkpoint either, as in issue 17): the signal itself saves."""
    runs = tmp_path / "runs"
    args = _fit_args(runs, synthetic_root, cache, "trainer.val_check_interval=100000")
    fit = fits([*args, "trainer.max_steps=100000"])
    fit.wait_until(lambda: ARMED in fit.output, "training to start")
    fit.proc.send_signal(signum)
    run_dir, last, saved = _stopped_by(fit, signum, runs)
    assert f"fit stopped by {signum.name} at step {saved}: saved {last}; resume with ckpt_path=last" in fit.output
    assert "success" not in fit.output.lower()
    load_learner(last)
    _resume_and_check(args, run_dir, saved)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_process_group_leaves_dataloader_workers_quiet(tmp_path: Path, synthetic_root: Path,
                                                                       cache: Path, fits, signum: signal.Signals) -> None:
    """With DataLoader workers (``data.num_workers=2``), a signal to the whole process group (Ctrl-C, SLURM,
    ``kill -- -PGID``) is handled by the training process alone: it saves its step and exits with the
    signal's code, and no worker dies of the signal or prints a traceback."""
    runs = tmp_path / "runs"
    args = _fit_args(runs, synthetic_root, cache, "trainer.val_check_interval=100000", "data.num_workers=2")
    fit = fits([*args, "trainer.max_steps=100000"])
    fit.wait_until(lambda: ARMED in fit.output, "training to start")
    time.sleep(1.0)  # the workers are serving batches
    os.killpg(fit.proc.pid, signum)
    run_dir, last, saved = _stopped_by(fit, signum, runs)
    assert f"fit stopped by {signum.name} at step {saved}: saved {last}; resume with ckpt_path=last" in fit.output
    assert "Traceback" not in fit.output and "DataLoader worker" not in fit.output, fit.output[-4000:]
    load_learner(last)


@pytest.mark.parametrize("signum, to_group", [(signal.SIGTERM, False), (signal.SIGINT, True)],
                         ids=["SIGTERM-to-rank-0", "SIGINT-to-every-rank"])
def test_signal_under_ddp_stops_every_rank_at_one_step(tmp_path: Path, synthetic_root: Path, cache: Path, fits,
                                                       signum: signal.Signals, to_group: bool) -> None:
    """2-process CPU DDP started by Lightning: rank 0 (this test's child) starts rank 1. A signal to
    rank 0 alone (Kubernetes signals the container's first process) or to both (Ctrl-C, SLURM) stops
    both ranks at the same step with the signal's exit code; rank 0 exits after rank 1."""
    runs = tmp_path / "runs"
    args = _fit_args(runs, synthetic_root, cache, "trainer.val_check_interval=100000")
    fit = fits([*args, "trainer.max_steps=100000", "trainer.accelerator=cpu", "trainer.devices=2",
                "trainer.strategy=ddp"])
    fit.wait_until(lambda: ARMED in fit.output, "training to start on both ranks")
    if to_group:
        os.killpg(fit.proc.pid, signum)
    else:
        fit.proc.send_signal(signum)
    run_dir, last, saved = _stopped_by(fit, signum, runs)
    message = f"fit stopped by {signum.name} at step {saved}: saved {last}; resume with ckpt_path=last"
    lines = fit.output.splitlines()
    assert message in lines and f"[rank 1] {message}" in lines, fit.output[-4000:]  # each rank, the same step
    assert "success" not in fit.output.lower()
    _resume_and_check(args, run_dir, saved)


def test_kill_during_a_checkpoint_write_leaves_last_ckpt_whole(tmp_path: Path, synthetic_root: Path, cache: Path,
                                                              fits) -> None:
    runs = tmp_path / "runs"
    writing = tmp_path / "writing"
    args = _fit_args(runs, synthetic_root, cache, "trainer.val_check_interval=5")
    fit = fits([*args, "trainer.max_steps=40"], python_args=("-c", SLOW_LAST_WRITE), env={"WRITING": str(writing)})
    fit.wait_until(writing.exists, "the second write of last.ckpt")
    fit.kill_session()  # kill -9, half of the new last.ckpt on disk
    run_dir = runs / "multispeaker" / "version_0"
    folder = run_dir / "checkpoints"
    partial = list(folder.glob(f"{PARTIAL_PREFIX}*"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # the write was under way
    assert _step(folder / "last.ckpt") == 5  # the previous last.ckpt, whole
    for ckpt in folder.glob("*.ckpt"):
        load_learner(ckpt)
    _resume_and_check(args, run_dir, 5)
    assert not list(folder.glob(f"{PARTIAL_PREFIX}*"))  # the next run's first save removed the dead write
