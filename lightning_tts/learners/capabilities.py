"""What a learner can do beyond adapting and synthesising, as typed protocols checked with ``isinstance``.

A learner has a capability by implementing its method(s); callers ask ``isinstance(learner,
ReferenceCloning)`` instead of calling a method that raises. ``BaseLearner`` carries none of them.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from lightning_tts.learners.base import AdaptedState


@runtime_checkable
class ReferenceCloning(Protocol):
    """Clones a voice from reference recordings alone: no transcripts, no gradient steps
    (``synthesize --reference``)."""

    def reference_state(self, mels: torch.Tensor, lengths: torch.Tensor) -> AdaptedState:
        """(K, T, n_mels) padded reference mels with (K,) lengths -> the voice they share."""
        ...


@runtime_checkable
class SpeakerEncoding(Protocol):
    """Embeds utterances as speaker vectors (``embed``, speaker maps, the evaluation judge)."""

    def embed_utterances(self, mels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels), (B,) -> (B, D) unit-length speaker embeddings."""
        ...


@runtime_checkable
class SpeakerTable(Protocol):
    """Keeps a voice for each training speaker (``synthesize --speaker``)."""

    speakers: list[str]

    def speaker_state(self, speaker: str) -> AdaptedState:
        """The voice of a training speaker."""
        ...
