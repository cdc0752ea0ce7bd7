"""Where models run: ``auto`` picks CUDA when present, else the CPU."""
from __future__ import annotations

import torch

from lightning_tts.errors import ConfigError


def resolve_device(device: str | torch.device = "auto", key: str = "--device") -> torch.device:
    """``auto``: CUDA when present, else the CPU; otherwise the named device. ``key``: how the user gave
    it (``--device``, or a config key such as ``device``), for the error.

    Raises:
        ConfigError: an unknown device name, CUDA asked for where there is none, or a CUDA index past
            the devices present.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"{key} must be auto, cpu, cuda or cuda:N, got {device!r}") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key} {device}: no CUDA device is available here (use cpu or auto)")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ConfigError(f"{key} {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return resolved
