"""Where models run: ``auto`` picks CUDA when present, else the CPU."""
from __future__ import annotations

import torch

from lightning_tts.errors import ConfigError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA when present, else the CPU; otherwise the named device.

    Raises:
        ConfigError: an unknown device name, or CUDA asked for where there is none.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available here (use --device cpu or auto)")
    return resolved
