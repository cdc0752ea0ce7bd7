"""The baseline: multi-speaker training with a speaker lookup table, fine-tuning to adapt.

"Transfer learning" in the sense of Jia et al. (2018) and AdaSpeech (Chen et al., 2021): train one
model on many speakers, then fit a new speaker vector and the decoder's conditional layer norms on
the new speaker's K utterances. Every meta-learner must beat it at equal adaptation steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lightning_tts.data.plans import UtteranceBatches
from lightning_tts.data.tasks import UtteranceBatch
from lightning_tts.errors import LightningTTSError
from lightning_tts.learners import register_learner
from lightning_tts.learners.base import AdaptedState, BaseLearner, LearnerConfig, ValidationExample


@dataclass
class MultiSpeakerConfig(LearnerConfig):
    """Options of ``MultiSpeakerLearner``."""

    name: str = "multispeaker"


@register_learner
class MultiSpeakerLearner(BaseLearner):
    """Multi-speaker FastPitch-style training on utterance batches; adapts by fine-tuning.

    Args: see ``BaseLearner`` (options: ``MultiSpeakerConfig``).
    """

    name = "multispeaker"
    batches = UtteranceBatches()
    Config = MultiSpeakerConfig

    def __init__(self, **sections: Any) -> None:
        super().__init__(**sections)
        self.speaker_table = nn.Embedding(len(self.speakers), self.model.speaker_dim)
        nn.init.normal_(self.speaker_table.weight, std=0.3)

    def training_step(self, batch: UtteranceBatch, batch_idx: int) -> torch.Tensor:
        losses, _ = self.acoustic_losses(batch, self.speaker_table(batch.speaker_ids))
        self.log_losses("train", losses, batch_size=len(batch))
        return losses["loss"]

    def validation_step(self, batch: UtteranceBatch, batch_idx: int) -> ValidationExample:
        """Held-out utterances of training speakers (teacher-forced durations)."""
        losses, out = self.acoustic_losses(batch, self.speaker_table(batch.speaker_ids))
        self.log_losses("val", losses, batch_size=len(batch))
        return self.example(batch, out)

    def initial_speaker(self) -> torch.Tensor:
        """The mean training speaker vector."""
        return self.speaker_table.weight.mean(dim=0)

    def adapt_start(self, support: UtteranceBatch) -> AdaptedState:
        """Fine-tuning starts from the mean training speaker, with no parameter overrides."""
        return AdaptedState(self.initial_speaker())

    def speaker_state(self, speaker: str) -> AdaptedState:
        """The table vector of a training speaker (``SpeakerTable``)."""
        if speaker not in self.speakers:
            shown = ", ".join(self.speakers[:8]) + (" ..." if len(self.speakers) > 8 else "")
            raise LightningTTSError(f"unknown speaker {speaker!r}; training speakers: {shown}")
        return AdaptedState(self.speaker_table.weight[self.speakers.index(speaker)].detach())
