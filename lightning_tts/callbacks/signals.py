"""SIGTERM and SIGINT during ``fit``: save the current step to ``last.ckpt``, then stop with a non-zero exit.

Schedulers end jobs with SIGTERM (SLURM at a time limit or on preemption, Kubernetes on eviction),
people with Ctrl-C (SIGINT). Left to Lightning, SIGTERM raised ``SystemExit`` with no code at the
next step (the process exited 0, and nothing was saved since the last validation) and Ctrl-C raised
``KeyboardInterrupt`` wherever training happened to be. Here a signal only records itself; at the end
of the optimiser step in progress, every rank agrees on it (one all-reduce per step under DDP, so a
signal that reached only one rank stops them all at the same step), ``last.ckpt`` is written
through the run's ``RunCheckpoint``, and ``fit`` raises ``TrainingInterrupted``, whose exit code is
the shell's for that signal (143 for SIGTERM, 130 for SIGINT). A second Ctrl-C aborts at once,
without saving.

Under SLURM with auto-requeue (Lightning's ``SLURMEnvironment``), its requeue signal (SIGUSR1) is
handled the same deferred way: at the end of the step every rank agrees on it, every rank takes part
in writing ``hpc_ckpt_<N>.ckpt`` (the file Lightning resumes a requeued job from), rank 0 runs
``scontrol requeue <job id>``, and ``fit`` stops (exit 138). Lightning's own handler did all of that
inside the signal handler, where its checkpoint barrier could interleave with a gradient all-reduce
still in flight on another rank and hang both.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, Iterator, Optional

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment

from lightning_tts.callbacks.checkpoint import RunCheckpoint

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
CHILD_EXIT_TIMEOUT_S = 120.0  # rank 0 waits this long for the ranks it started to exit, then kills them


class TrainingInterrupted(Exception):
    """``fit`` stopped by a signal, after saving the step it had reached.

    Attributes:
        signum: the signal.
        step: the global step reached.
        checkpoint: the checkpoint holding ``step``; None when no step was trained before the signal.
        exit_code: ``128 + signum``, what a shell reports for a process ended by that signal.
    """

    def __init__(self, signum: int, step: int, checkpoint: Optional[Path], requeued: Optional[str] = None) -> None:
        self.signum, self.step, self.checkpoint, self.requeued = signum, step, checkpoint, requeued
        self.exit_code = 128 + signum
        if requeued is not None:
            saved = f"saved {checkpoint}; requeued SLURM job {requeued}, which resumes from it"
        else:
            saved = f"saved {checkpoint}; resume with ckpt_path=last" if checkpoint else "no new step to save"
        super().__init__(f"fit stopped by {signal.Signals(signum).name} at step {step}: {saved}")


class SignalCheckpoint(pl.Callback):
    """Turns SIGTERM/SIGINT during ``fit`` into save-and-stop at the end of the current optimiser step.

    ``armed(trainer)`` installs the handlers around ``trainer.fit`` (``training.run`` does this); they are
    installed again at ``on_train_start`` because Lightning registers its own SIGTERM handler after the
    setup hooks. A signal that arrives before the first step stops training without saving.

    Args:
        checkpoint: the run's checkpoint callback, which writes ``last.ckpt``.
    """

    def __init__(self, checkpoint: RunCheckpoint) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self._pending = 0
        self._requeue_pending = False
        self._requeue_signal: Optional[int] = None  # SLURM's requeue signal, when the run is a requeueable SLURM job
        self._checked_step = -1
        self._children: list[subprocess.Popen] = []

    @contextmanager
    def armed(self, trainer: pl.Trainer) -> Iterator[None]:
        """Install the handlers for the block (in the main thread only) and restore the previous ones after
        it. Installed before ``trainer.fit``, the requeue handler also keeps Lightning from installing its own."""
        self._requeue_signal = _requeue_signal(trainer)
        previous = {signum: signal.getsignal(signum) for signum in self._signals()}
        self._pending, self._requeue_pending = 0, False
        self._install()
        try:
            yield
        finally:
            if threading.current_thread() is threading.main_thread():
                for signum, handler in previous.items():
                    signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
                if self._requeue_signal is not None and self._requeue_pending:  # requeued: the same signal
                    signal.signal(self._requeue_signal, signal.SIG_IGN)  # reaching a late task must not kill it

    def _signals(self) -> tuple[int, ...]:
        return STOP_SIGNALS + ((self._requeue_signal,) if self._requeue_signal is not None else ())

    def _install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in self._signals():
                signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        """Record the signal; nothing else is safe here (it may interrupt a collective or a write)."""
        if signum == self._requeue_signal:
            self._requeue_pending = True
            return
        if signum == signal.SIGINT and self._pending:  # Ctrl-C while a stop is pending: abort now
            raise KeyboardInterrupt
        self._pending = self._pending or signum

    def _agreed(self, trainer: pl.Trainer) -> tuple[int, bool]:
        """The signal to stop on (0: none) and whether to requeue, the same on every rank."""
        pending = self._pending or (signal.SIGTERM if trainer.received_sigterm else 0)
        if trainer.world_size == 1:
            return int(pending), self._requeue_pending
        flags = torch.tensor([int(pending), int(self._requeue_pending)], device=trainer.strategy.root_device)
        stop, requeue = trainer.strategy.reduce(flags, reduce_op="max").tolist()
        return int(stop), bool(requeue)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install()
        self._checked_step = trainer.global_step
        signum, _ = self._agreed(trainer)  # also a barrier: every rank has its handlers from here on
        if signum:  # a pending requeue waits for the first step, so that its checkpoint holds one
            self._stop(trainer, signum, save=False)
        if trainer.is_global_zero:
            log.info("SIGTERM or Ctrl-C from now on saves %s at the end of the current step and stops "
                     "(Ctrl-C twice: abort without saving)", Path(self.checkpoint.dirpath or ".") / "last.ckpt")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step == self._checked_step:  # no optimiser step in this batch (gradient accumulation)
            return
        self._checked_step = trainer.global_step
        signum, requeue = self._agreed(trainer)
        if signum:  # a stop outranks a requeue
            self._stop(trainer, signum, save=True)
        if requeue:
            self._requeue(trainer)

    def _stop(self, trainer: pl.Trainer, signum: int, save: bool) -> None:
        """Save ``last.ckpt`` (every rank takes part), then raise ``TrainingInterrupted`` on every rank."""
        if trainer.is_global_zero:
            log.info("%s received: %s", signal.Signals(signum).name,
                     f"saving step {trainer.global_step} and stopping" if save else "stopping before training a step")
        path = self.checkpoint.write_last(trainer) if save else None
        self._children = _release_children(trainer)
        raise TrainingInterrupted(signum, trainer.global_step, path)

    def _requeue(self, trainer: pl.Trainer) -> None:
        """Write ``hpc_ckpt_<N>.ckpt`` (every rank takes part), requeue the job from rank 0, then raise
        ``TrainingInterrupted`` on every rank: SLURM ends this allocation and starts the requeued job."""
        assert self._requeue_signal is not None
        self._requeue_pending = True  # this rank may not have seen the signal yet; it is still on its way
        path = Path(trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir))
        trainer.save_checkpoint(path)
        job_id = _slurm_job_id()
        if trainer.is_global_zero:
            log.info("%s received: saved step %d to %s; requeueing SLURM job %s",
                     signal.Signals(self._requeue_signal).name, trainer.global_step, path, job_id)
            result = subprocess.run(["scontrol", "requeue", job_id], check=False)
            if result.returncode != 0:
                log.warning("scontrol requeue %s failed with exit code %d", job_id, result.returncode)
        raise TrainingInterrupted(self._requeue_signal, trainer.global_step, path, requeued=job_id)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, TrainingInterrupted):
            _wait_for(self._children, CHILD_EXIT_TIMEOUT_S)
            self._children = []


def _requeue_signal(trainer: pl.Trainer) -> Optional[int]:
    """SLURM's requeue signal when the trainer runs as a SLURM job with auto-requeue, else None."""
    environment = trainer._accelerator_connector.cluster_environment
    if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
        return int(environment.requeue_signal or signal.SIGUSR1)
    return None


def _slurm_job_id() -> str:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` for an array task, else ``SLURM_JOB_ID``."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


def _release_children(trainer: pl.Trainer) -> list[subprocess.Popen]:
    """The other ranks, if this process started them, taken out of Lightning's watch.

    Lightning's launcher (``_SubprocessScriptLauncher``) starts ranks 1.. as child processes and
    watches them from a thread that SIGKILLs rank 0 as soon as one of them exits non-zero; they are
    about to exit with the signal's code, so rank 0 takes them off that list (``launcher.procs``,
    the list the watcher reads) and waits for them itself.
    """
    procs = getattr(trainer.strategy.launcher, "procs", None)
    if not isinstance(procs, list):
        return []
    children = list(procs)
    procs.clear()
    return children


def _wait_for(children: list[subprocess.Popen], timeout_s: float) -> None:
    """Wait for child ranks to exit; kill those still running after ``timeout_s`` seconds."""
    for child in children:
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("rank process %d did not stop within %.0f s: killing it", child.pid, timeout_s)
            child.kill()
