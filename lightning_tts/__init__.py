"""lightning_tts: few-shot speaker-adaptive text-to-speech by meta-learning, on PyTorch Lightning.

The Python face is ``TTS`` (``from lightning_tts import TTS``): load a checkpoint, adapt to or clone
a voice, speak. Importing the package is cheap: ``TTS`` (and with it torch and Lightning) loads on
first use.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["TTS", "__version__"]


def __getattr__(name: str) -> Any:
    """``TTS`` on first access (PEP 562), so ``import lightning_tts`` stays cheap."""
    if name == "TTS":
        from lightning_tts.api import TTS  # here, not at the top: importing the package must not load torch

        return TTS
    raise AttributeError(f"module 'lightning_tts' has no attribute {name!r}")
