"""Where the project's presets live, and how a user-given relative path is found."""
from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"
DEFAULT_CONFIG = CONF_DIR / "default.yaml"


def resolve_path(path: str | Path) -> Path:
    """A user-given relative path: from the working directory if it exists there, else the project root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    in_project = PROJECT_ROOT / p
    return in_project if in_project.exists() else p
