"""Adapting a checkpoint to a new voice (``adapt_voice``, the ``adapt`` command), and adapted-voice
files: what ``adapt`` writes and ``synthesize --adapted`` reads.

The file holds only what adaptation changed (``AdaptedState``), the learner's name, and the path
and SHA-256 of the base checkpoint, so it is small and can only be used with the model it was made
from. Written atomically; read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from lightning_tts.atomic import atomic_path, file_sha256, require_parent
from lightning_tts.data.support import SupportSet, load_support
from lightning_tts.errors import ConfigError, LightningTTSError
from lightning_tts.learners import load_learner
from lightning_tts.learners.base import AdaptedState, BaseLearner
from lightning_tts.provenance import provenance

FORMAT = "lightning_tts.adapted/1"


@dataclass
class AdaptResult:
    """What ``adapt_voice`` did.

    Attributes:
        learner: the loaded checkpoint's learner.
        support: the usable support set (and what was skipped).
        state: the adapted voice (also written to the output file).
        steps: adaptation steps taken.
        loss_before: support mel L1 at the start of adaptation.
        loss_after: support mel L1 of the adapted voice.
    """

    learner: BaseLearner
    support: SupportSet
    state: AdaptedState
    steps: int
    loss_before: float
    loss_after: float


def adapt_voice(checkpoint: str | Path, out: str | Path, support: Optional[str | Path] = None,
                manifest: Optional[str | Path] = None, shots: Optional[int] = None, steps: Optional[int] = None,
                lr: Optional[float] = None, progress: Optional[Callable[[float], None]] = None) -> AdaptResult:
    """Adapt a checkpoint to the voice of a support folder (or manifest) and write the adapted voice.

    Args:
        checkpoint: a checkpoint written by ``fit``.
        out: the adapted-voice file to write (its directory must exist).
        support: folder of wav/flac files with same-stem .txt transcripts.
        manifest: CSV/JSONL manifest (audio,text) instead of a folder.
        shots: use the first K usable utterances (default: all).
        steps: adaptation steps (default: the learner's ``adapt_steps``).
        lr: adaptation learning rate (default: the learner's).
        progress: called after each step with its loss.

    Raises:
        ConfigError: negative steps or a non-positive rate.
        LightningTTSError / DataError: unusable checkpoint, support set or output path.
    """
    if steps is not None and steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {steps}")
    if lr is not None and lr <= 0:
        raise ConfigError(f"--lr must be > 0, got {lr}")
    out = require_parent(out)
    learner = load_learner(checkpoint)
    support_set = load_support(learner.feature_params, learner.text, support, manifest, shots)
    steps = learner.adapt_steps if steps is None else steps
    batch = support_set.batch
    before = learner.support_loss(batch, learner.adapt(batch, steps=0))
    state = learner.adapt(batch, steps=steps, lr=lr, progress=progress)
    after = learner.support_loss(batch, state)
    save_adapted(out, state, learner, checkpoint, {"support": support_set.paths, "steps": steps, "lr": lr,
                                                   "support_loss_before": before, "support_loss_after": after})
    return AdaptResult(learner, support_set, state, steps, before, after)


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
