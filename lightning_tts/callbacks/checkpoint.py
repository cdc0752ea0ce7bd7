"""Checkpointing: ``last.ckpt`` always holds the final step of a run, plus the best on ``val/mel_loss``;
every checkpoint file is replaced atomically.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

import pytorch_lightning as pl
import torch
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

#: Name prefix of a checkpoint being written. It holds neither ``.ckpt``, ``last`` nor ``hpc_ckpt_``:
#: Lightning lists checkpoint folders for those (``ckpt_path="last"``, the newest ``hpc_ckpt_<N>``).
PARTIAL_PREFIX = ".partial-"


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that also writes ``last.ckpt`` when training ends after the last save.

    Lightning saves at validation ends only, so the steps after the last validation were lost from
    ``last.ckpt``; a resumed run would repeat them. (Relies on ``ModelCheckpoint`` internals of
    Lightning 2.x: ``_last_global_step_saved``, ``_save_last_checkpoint``, ``_monitor_candidates``.)
    """

    def write_last(self, trainer: pl.Trainer) -> Path:
        """Write ``last.ckpt`` at the current step unless it already holds it; call it on every rank.

        Returns:
            The ``last`` checkpoint's path.
        """
        if self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        return Path(self.last_model_path)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last:
            self.write_last(trainer)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoint IO, but a kill at any moment leaves the old or the new file.

    Lightning's own IO writes through an fsspec transaction whose temporary file is made in
    ``$TMPDIR`` and moved over the target on commit; when ``$TMPDIR`` is another filesystem (a
    node's local disk, a cluster's scratch) that move is a copy into the target itself, and a kill
    during it leaves a torn checkpoint. Here a local checkpoint is written to a temporary file in
    the target's directory, fsynced, renamed over the target with ``os.replace`` (atomic within a
    filesystem), and the directory is fsynced so the rename itself survives a crash. A kill leaves
    at most a ``.partial-<pid>-*`` file, which the next save into that directory by another process
    removes. Remote (non-local fsspec) paths keep Lightning's IO.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Optional[Any] = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically (see the class docstring).

        Raises:
            TypeError: ``storage_options`` given (as Lightning's ``TorchCheckpointIO``).
        """
        fs, local_path = url_to_fs(str(path))
        if storage_options is not None or not isinstance(fs, LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(local_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        replace_file(target, lambda f: torch.save(checkpoint, f))


def replace_file(target: Path, write: Callable[[BinaryIO], None]) -> None:
    """Create or replace ``target`` with what ``write`` writes, so that it is never seen half-written.

    Args:
        target: the file to write; its directory must exist.
        write: writes the whole content to the binary file it is given.
    """
    remove_stale_partials(target.parent)
    partial = target.parent / f"{PARTIAL_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, target)
    finally:
        if partial.exists():
            partial.unlink()
    fsync_directory(target.parent)


def remove_stale_partials(directory: Path) -> None:
    """Delete partial files that other processes left in ``directory`` (killed while writing)."""
    for stale in directory.glob(f"{PARTIAL_PREFIX}*"):
        if not stale.name.startswith(f"{PARTIAL_PREFIX}{os.getpid()}-"):
            stale.unlink(missing_ok=True)


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entries (a rename) to disk, where the platform allows opening directories."""
    if not hasattr(os, "O_DIRECTORY"):  # Windows
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
            os.fsync(fd)
    finally:
        os.close(fd)
