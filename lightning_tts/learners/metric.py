"""Metric learning: a speaker encoder trained so that utterances of one voice are close and others
far, and a TTS model conditioned on its embedding, so an unseen voice needs no gradient steps.

The speaker encoder (``models/speaker_encoder.py``) is trained on N speakers x M utterances batches
with a siamese contrastive loss (Hadsell et al., 2006), a triplet loss with batch-all, batch-hard or
semi-hard mining (Schroff et al., 2015; Hermans et al., 2017), or the GE2E loss (Wan et al., 2018).
The acoustic model is conditioned on a projection of the speaker embedding (SV2TTS, Jia et al.,
2018); in training each utterance is conditioned on the leave-one-out centroid of the *other*
utterances of its speaker in the batch, so it learns to clone a voice from references it does not
reconstruct. ``encoder_mode`` chooses whether the TTS loss also trains the encoder (``joint``),
only the metric loss does (``separate``, the default), or the encoder is loaded from an earlier
metric run and frozen (``frozen``). ``tts_weight=0`` trains the encoder alone: that is how the
dedicated *evaluation* encoder for speaker similarity is made (``conf/learner/speaker_encoder.yaml``).

Validation logs ``val/eer`` over every pair of the fixed validation utterances (held-out speakers)
and ``val/silhouette`` (cosine) of their embeddings, and, with TTS, the zero-shot ``val/mel_loss``.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightning_tts.data.plans import SpeakerBatches
from lightning_tts.data.tasks import UtteranceBatch
from lightning_tts.errors import LightningTTSError
from lightning_tts.learners import load_learner, register_learner
from lightning_tts.learners.base import AdaptedState, BaseLearner, LearnerConfig, ValidationExample
from lightning_tts.metrics import verification_scores
from lightning_tts.models.speaker_encoder import SpeakerEncoder, SpeakerEncoderConfig
from lightning_tts.models.speaker_losses import MINING, GE2ELoss, contrastive_loss, triplet_loss

LOSSES = ("contrastive", "triplet", "ge2e")
ENCODER_MODES = ("joint", "separate", "frozen")


@dataclass
class MetricConfig(LearnerConfig):
    """Options of ``MetricLearner``.

    Attributes:
        metric_loss: ``contrastive``, ``triplet`` or ``ge2e``.
        mining: triplet mining: ``all``, ``batch_hard`` or ``semi_hard``.
        margin: contrastive/triplet margin (Euclidean, embeddings on the unit sphere).
        metric_weight: weight of the metric loss.
        tts_weight: weight of the acoustic loss (0: train the speaker encoder only).
        encoder_mode: ``joint``, ``separate`` or ``frozen`` (see the module docstring).
        encoder_checkpoint: a metric checkpoint whose encoder initialises this one (required by
            ``frozen``; read when training starts, never when loading this checkpoint).
        encoder: ``SpeakerEncoder`` sizes.
        adapt_steps: fine-tune steps after the zero-shot embedding (default 0: zero-shot).
    """

    name: str = "metric"
    adapt_steps: int = 0
    metric_loss: str = "ge2e"
    mining: str = "batch_hard"
    margin: float = 0.3
    metric_weight: float = 1.0
    tts_weight: float = 1.0
    encoder_mode: str = "separate"
    encoder_checkpoint: Optional[str] = None
    encoder: SpeakerEncoderConfig = field(default_factory=SpeakerEncoderConfig)


def leave_one_out_centroids(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, D): per item, the normalised mean of the *other* items with its label (its own
    embedding when it has no other)."""
    same = (labels[:, None] == labels[None]).to(embeddings.dtype)  # (B, B)
    others = same - torch.eye(len(labels), dtype=embeddings.dtype, device=embeddings.device)
    sums = others @ embeddings  # (B, D)
    alone = others.sum(1) == 0
    return F.normalize(torch.where(alone[:, None], embeddings, sums), dim=-1)


def name_labels(names: list[str], device: torch.device) -> torch.Tensor:
    """(B,) integer labels of speaker (or utterance) names, the same on every rank (CRC-32)."""
    return torch.tensor([zlib.crc32(n.encode()) for n in names], dtype=torch.long, device=device)


@register_learner
class MetricLearner(BaseLearner):
    """Speaker-encoder metric learning + zero-shot TTS conditioned on the encoder's embedding.

    Args: see ``BaseLearner`` (options: ``MetricConfig``).

    Example::

        python -m lightning_tts fit --config conf/learner/metric.yaml learner.metric_loss=triplet learner.mining=semi_hard
    """

    name = "metric"
    batches = SpeakerBatches()
    Config = MetricConfig
    warm_start_modules = ("encoder", "speaker_proj", "ge2e")

    def __init__(self, **sections: Any) -> None:
        super().__init__(**sections)
        c = self.config
        metric_loss, mining, encoder_mode = c.metric_loss, c.mining, c.encoder_mode
        metric_weight, tts_weight = c.metric_weight, c.tts_weight
        if metric_loss not in LOSSES:
            raise LightningTTSError(f"learner.metric_loss must be one of {LOSSES}, got {metric_loss!r}")
        if mining not in MINING:
            raise LightningTTSError(f"learner.mining must be one of {MINING}, got {mining!r}")
        if encoder_mode not in ENCODER_MODES:
            raise LightningTTSError(f"learner.encoder_mode must be one of {ENCODER_MODES}, got {encoder_mode!r}")
        if encoder_mode == "frozen" and not c.encoder_checkpoint:
            raise LightningTTSError("learner.encoder_mode=frozen needs learner.encoder_checkpoint=PATH (a metric run)")
        if encoder_mode == "frozen" and (tts_weight <= 0):
            raise LightningTTSError("learner.encoder_mode=frozen trains nothing with learner.tts_weight=0")
        if tts_weight <= 0 and metric_weight <= 0:
            raise LightningTTSError("learner.metric_weight and learner.tts_weight are both 0: nothing to train")
        self.metric_loss, self.mining, self.margin = metric_loss, mining, c.margin
        self.metric_weight, self.tts_weight, self.encoder_mode = metric_weight, tts_weight, encoder_mode
        self.synthesizes = tts_weight > 0
        self.encoder = SpeakerEncoder(self.feature_params.n_mels, c.encoder)
        self.speaker_proj = nn.Linear(self.encoder.dim, self.model.speaker_dim)
        self.ge2e = GE2ELoss() if metric_loss == "ge2e" else None
        # parameters no loss reaches are frozen, so DDP needs no find_unused_parameters
        self.trains_metric = metric_weight > 0 and encoder_mode != "frozen"
        encoder_trains = self.trains_metric or (encoder_mode == "joint" and tts_weight > 0)
        for p in [*self.model.parameters(), *self.speaker_proj.parameters()]:
            p.requires_grad_(tts_weight > 0)
        for p in self.encoder.parameters():
            p.requires_grad_(encoder_trains)
        for p in self.ge2e.parameters() if self.ge2e is not None else []:
            p.requires_grad_(self.trains_metric)
        self._val_rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def setup(self, stage: str) -> None:
        """Before training: load ``encoder_checkpoint`` into the encoder (a resumed run's own
        checkpoint is restored after this, so it wins).

        Raises:
            LightningTTSError: a checkpoint without a matching encoder.
        """
        if stage != "fit":
            return
        path = self.config.encoder_checkpoint
        if path:
            source = load_learner(path)
            if not isinstance(source, MetricLearner):
                raise LightningTTSError(f"learner.encoder_checkpoint {path} is a {source.name} checkpoint, not metric")
            try:
                self.encoder.load_state_dict(source.encoder.state_dict())
            except RuntimeError as err:
                raise LightningTTSError(f"learner.encoder_checkpoint {path}: its encoder has other sizes than "
                                        f"learner.encoder ({str(err).splitlines()[0]})") from err

    # ---------------------------------------------------------------- embeddings and losses
    def embed_utterances(self, mels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels), (B,) -> (B, D): whole utterances, averaged over partial windows (``SpeakerEncoding``)."""
        return self.encoder.embed(mels, lengths)

    def metric_losses(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The configured metric loss of (B, D) embeddings with (B,) speaker labels."""
        if self.metric_loss == "contrastive":
            return contrastive_loss(embeddings, labels, margin=self.margin)
        if self.metric_loss == "triplet":
            return triplet_loss(embeddings, labels, margin=self.margin, mining=self.mining).loss
        assert self.ge2e is not None
        return self.ge2e(embeddings, labels)

    def speaker_vectors(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, D) speaker embeddings -> (B, speaker_dim) acoustic-model speaker vectors."""
        return self.speaker_proj(embeddings)

    def _zero_shot_losses(self, batch: UtteranceBatch, embeddings: torch.Tensor,
                          labels: torch.Tensor) -> tuple[dict[str, torch.Tensor], Any]:
        """Acoustic losses of ``batch`` with each item conditioned on its speaker's other items."""
        cond = leave_one_out_centroids(embeddings if self.encoder_mode == "joint" else embeddings.detach(), labels)
        return self.acoustic_losses(batch, self.speaker_vectors(cond))

    def training_step(self, batch: UtteranceBatch, batch_idx: int) -> torch.Tensor:
        labels = name_labels(batch.speakers, batch.mels.device)
        crops, crop_lengths = self.encoder.random_crop(batch.mels, batch.mel_lengths)
        embeddings = self.encoder(crops, crop_lengths)  # (B, D)
        losses: dict[str, torch.Tensor] = {}
        total = embeddings.new_zeros(())
        if self.trains_metric:
            losses["metric_loss"] = self.metric_losses(embeddings, labels)
            total = total + self.metric_weight * losses["metric_loss"]
        if self.tts_weight > 0:
            tts, _ = self._zero_shot_losses(batch, embeddings, labels)
            losses.update({k if k != "loss" else "tts_loss": v for k, v in tts.items()})
            total = total + self.tts_weight * tts["loss"]
        losses["loss"] = total
        self.log_losses("train", losses, batch_size=len(batch))
        if self.ge2e is not None:
            self.log("train/ge2e_w", self.ge2e.w.detach(), on_step=True, on_epoch=False)
        return total

    def validation_step(self, batch: UtteranceBatch, batch_idx: int) -> Optional[ValidationExample]:
        """Embed held-out speakers' fixed utterances (EER and silhouette at epoch end); zero-shot mel loss."""
        return self._evaluation_step(batch, "val")

    def test_step(self, batch: UtteranceBatch, batch_idx: int) -> None:
        """As validation, on the test speakers: ``test/eer``, ``test/silhouette``, zero-shot ``test/mel_loss``."""
        self._evaluation_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_verification("val")

    def on_test_epoch_end(self) -> None:
        self._log_verification("test")

    def _evaluation_step(self, batch: UtteranceBatch, stage: str) -> Optional[ValidationExample]:
        labels = name_labels(batch.speakers, batch.mels.device)
        embeddings = self.embed_utterances(batch.mels, batch.mel_lengths)
        self._val_rows.append((embeddings.detach().float(), labels, name_labels(batch.utterance_ids, labels.device)))
        if self.tts_weight <= 0:
            return None
        losses, out = self._zero_shot_losses(batch, embeddings, labels)
        self.log_losses(stage, losses, batch_size=len(batch))
        return self.example(batch, out)

    def _log_verification(self, stage: str) -> None:
        """``stage/eer`` over every pair of the stage's fixed utterances (all ranks'), ``stage/silhouette``."""
        if not self._val_rows:
            return
        embeddings, labels, utts = (torch.cat(x) for x in zip(*self._val_rows))
        self._val_rows = []
        embeddings, labels, utts = (self._gather_rows(x) for x in (embeddings, labels, utts))
        keep = np.unique(utts.cpu().numpy(), return_index=True)[1]  # each utterance once
        emb, lab = embeddings[keep].cpu().numpy(), labels[keep].cpu().numpy()
        if len(np.unique(lab)) < 2:
            return
        eer, silhouette = verification_scores(emb, lab)
        self.log(f"{stage}/eer", eer, prog_bar=True, sync_dist=False)
        self.log(f"{stage}/silhouette", silhouette, sync_dist=False)

    def _gather_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's rows of ``x`` (ranks may hold different counts)."""
        if self.trainer is None or self.trainer.world_size == 1:
            return x
        counts = self.all_gather(torch.tensor(len(x), device=self.device)).view(-1)
        padded = torch.zeros((int(counts.max()), *x.shape[1:]), dtype=x.dtype, device=self.device)
        padded[: len(x)] = x
        gathered = self.all_gather(padded)  # (W, max, ...)
        return torch.cat([gathered[r, : int(c)] for r, c in enumerate(counts)])

    def checkpoint_monitor(self) -> tuple[str, str]:
        return ("val/mel_loss", "min") if self.tts_weight > 0 else ("val/eer", "min")

    # ---------------------------------------------------------------- adaptation interface
    def reference_state(self, mels: torch.Tensor, lengths: torch.Tensor) -> AdaptedState:
        """Zero-shot voice: the normalised mean embedding of reference mels (K, T, n_mels), projected
        (``ReferenceCloning``).

        Raises:
            LightningTTSError: a speaker-encoder-only checkpoint (``tts_weight=0``).
        """
        if not self.synthesizes:
            raise LightningTTSError("this metric checkpoint is a speaker encoder only (learner.tts_weight=0): "
                                    "it cannot synthesise; use it for embed or fewshot.speaker_encoder")
        with torch.no_grad():
            centroid = self.encoder.centroid(mels, lengths)
            return AdaptedState(self.speaker_vectors(centroid[None])[0], extras={"embedding": centroid})

    def adapt_start(self, support: UtteranceBatch) -> AdaptedState:
        """The zero-shot voice of the support recordings (fine-tuning, if any, starts here)."""
        return self.reference_state(support.mels, support.mel_lengths)

