"""Adapted-voice files: what ``adapt`` (``TTS.save``) writes and ``synthesize --adapted`` (``TTS.load``) reads.

The file holds only what adaptation changed (``AdaptedState``), the learner's name, and the path
and SHA-256 of the base checkpoint, so it is small and can only be used with the model it was made
from. Written atomically; read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lightning_tts.atomic import atomic_path, file_sha256
from lightning_tts.errors import LightningTTSError
from lightning_tts.learners.base import AdaptedState, BaseLearner
from lightning_tts.provenance import provenance

FORMAT = "lightning_tts.adapted/1"


def save_adapted(path: str | Path, state: AdaptedState, learner: BaseLearner, checkpoint: str | Path,
                 info: dict[str, Any]) -> None:
    """Write an adapted voice next to nothing else: state + base checkpoint reference + ``info``."""
    payload = {"format": FORMAT, "learner": learner.name, "base_checkpoint": str(Path(checkpoint).resolve()),
               "base_sha256": file_sha256(checkpoint), "state": state.to_payload(), "info": dict(info),
               "provenance": provenance()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_adapted(path: str | Path, learner: BaseLearner, checkpoint: str | Path) -> AdaptedState:
    """The adapted state in ``path``, checked against the checkpoint it is used with.

    Raises:
        LightningTTSError: unreadable file, another learner, or another base checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise LightningTTSError(f"adapted file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise LightningTTSError(f"cannot load adapted file {path}: {str(err).strip().splitlines()[0]}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise LightningTTSError(f"{path} is not an adapted-voice file written by 'adapt'")
    if payload["learner"] != learner.name:
        raise LightningTTSError(f"{path} was adapted with learner {payload['learner']}, the checkpoint is {learner.name}")
    if payload["base_sha256"] != file_sha256(checkpoint):
        raise LightningTTSError(f"{path} was adapted from another checkpoint ({payload['base_checkpoint']})")
    return AdaptedState.from_payload(payload["state"], learner.device)
