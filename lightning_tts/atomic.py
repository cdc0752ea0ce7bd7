"""Atomic file writes (a file is either absent or complete, never half-written), and file hashing.

Writers produce a temporary file in the destination directory and rename it over the target
(``os.replace`` is atomic on POSIX and Windows within one filesystem). A crash or kill leaves at
most a ``*.tmp-*`` file behind, which readers never mistake for a valid file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from lightning_tts.errors import LightningTTSError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    Args:
        path: the final destination. Its directory must exist and be writable.

    Raises:
        LightningTTSError: the destination directory is missing or not writable.
    """
    target = require_parent(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not os.access(parent, os.W_OK):
        raise LightningTTSError(f"cannot write {target}: directory {parent} is not writable")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", suffix=target.suffix, dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def require_parent(path: str | os.PathLike, verb: str = "write") -> Path:
    """``path`` as a Path, after checking that its directory exists (nothing is created).

    Raises:
        LightningTTSError: "cannot <verb> PATH: directory PARENT does not exist".
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise LightningTTSError(f"cannot {verb} {target}: directory {parent} does not exist")
    return target


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path``.

    Raises:
        LightningTTSError: the file is missing or not valid JSON (one line naming it).
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise LightningTTSError(f"cannot read {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
