"""Where the presets shipped with the package live, and how a user-given relative path is found.

The YAML presets (``conf/``) and the speaker split lists (``data/splits/``) are package data, read
through ``importlib.resources``: they are found the same from a checkout, an editable install, a
plain ``pip install .`` or a wheel, from any working directory.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

PACKAGE_ROOT = Path(str(files("lightning_tts")))  # an installed package is a directory on disk
CONF_DIR = PACKAGE_ROOT / "conf"
DEFAULT_CONFIG = CONF_DIR / "default.yaml"


def resolve_path(path: str | Path) -> Path:
    """A user-given relative path: from the working directory if it exists there, else among the
    package's presets (``conf/...``, ``data/splits/...``), else as given."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    shipped = PACKAGE_ROOT / p
    return shipped if shipped.exists() else p
