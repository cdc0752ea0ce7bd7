"""What every learner shares: the acoustic model, its loss, logging, optimisers, and the adaptation
interface (train on a batch; ``adapt`` to a support set; ``synthesize`` from an adapted state).

A learner is built from plain containers, one per config section (``model``, ``loss``, ``optim``,
``learner``, ...), which are also its stored hyper-parameters; each becomes the dataclass that lives
next to the class it configures. What a learner can do beyond this (clone from reference audio,
embed speakers, a speaker table) is a protocol of ``learners/capabilities.py``.

An ``AdaptedState`` is everything that adaptation changed: a speaker vector, overrides for a named
subset of model parameters, and learner-specific tensors (a memory, an embedding). It is saved as
plain tensors and loaded with ``weights_only=True``.

A warm start (``init_from=CKPT``, ``learners.warm_start``) copies another run's weights into a new
learner (``warm_start_from``) and gives it a ``schedule_offset``: the source's step, from which the
schedules that belong to the model (binarisation-loss start, learning-rate warm-up) continue.
"""
from __future__ import annotations

import contextlib
import fnmatch
import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, List, Mapping, Optional

import pytorch_lightning as pl
import torch
from torch.func import functional_call

from lightning_tts import __version__
from lightning_tts.audio import FeatureParams
from lightning_tts.data.plans import BatchPlan, UtteranceBatches
from lightning_tts.data.tasks import Task, TaskBatch, UtteranceBatch
from lightning_tts.errors import ConfigError, LightningTTSError
from lightning_tts.models.acoustic import AcousticModel, AcousticOutput, ModelConfig
from lightning_tts.models.losses import AcousticLoss, LossConfig, masked_l1
from lightning_tts.provenance import provenance
from lightning_tts.schema import build, to_container
from lightning_tts.text import TextProcessor

CHECKPOINT_FORMAT = 2  # bump with a migration in learners.load_learner when checkpoint contents change
SPEAKER_TABLE = "speaker_table.weight"  # a source's (speakers, speaker_dim) table, whose mean seeds an initial speaker

log = logging.getLogger(__name__)


@dataclass
class AdaptedState:
    """What adapting to one speaker produced.

    Attributes:
        speaker: (speaker_dim,) speaker vector.
        params: overrides of model parameters by name (only the adapted ones).
        extras: learner-specific tensors (e.g. a memory matrix).
    """

    speaker: torch.Tensor
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        """Plain containers of CPU tensors (for ``torch.save``)."""
        cpu = lambda d: {k: v.detach().cpu() for k, v in d.items()}  # noqa: E731
        return {"speaker": self.speaker.detach().cpu(), "params": cpu(self.params), "extras": cpu(self.extras)}

    @classmethod
    def from_payload(cls, payload: dict[str, Any], device: torch.device | str = "cpu") -> "AdaptedState":
        """Inverse of ``to_payload``."""
        move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        return cls(payload["speaker"].to(device), move(payload.get("params", {})), move(payload.get("extras", {})))


def fp32_gradients(device: torch.device) -> Any:
    """A context that turns off fp16 autocast (Lightning's ``16-mixed``): gradients taken outside the
    trainer's loss scaler, like adaptation's, would underflow in fp16. bf16 autocast stays on."""
    fp16 = torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.float16
    return torch.autocast(device.type, enabled=False) if fp16 else contextlib.nullcontext()


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule of the (outer) training loop (the ``optim`` section).

    Attributes:
        name: ``adamw``, ``adam`` or ``sgd``.
        lr: peak learning rate.
        weight_decay: weight decay.
        betas: Adam betas (SGD: ``betas[0]`` is the momentum).
        warmup_steps: linear warm-up steps.
        scheduler: ``cosine`` (decay to ``min_lr_ratio`` x lr) or ``constant``.
        min_lr_ratio: the cosine schedule's floor.
    """

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-6
    betas: List[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 100
    scheduler: str = "cosine"
    min_lr_ratio: float = 0.05


@dataclass
class LearnerConfig:
    """Options every learner has (the ``learner`` section; subclasses add their own fields).

    Attributes:
        name: the learner (a module of ``lightning_tts.learners``).
        adapt_steps: default gradient steps of ``adapt``.
        adapt_lr: default learning rate of ``adapt``.
        adapt_params: fnmatch patterns of model parameters that ``adapt`` fine-tunes.
        adapt_anchor: weight of the pull of the adapted model parameters toward where adaptation
            started, ``adapt_anchor * sum((theta - theta_0) ** 2)`` added to the support loss (L2-SP,
            Li et al. 2018; the speaker vector is not pulled); 0 = off.
        adapt_holdout: early stopping: hold the last support utterance out, adapt on the others and
            return the state (of steps 0..``steps``) whose loss on the held-out one was lowest; with a
            single support utterance there is nothing to hold out and it adapts on that one.
    """

    name: str = ""
    adapt_steps: int = 20
    adapt_lr: Optional[float] = 0.01
    adapt_params: List[str] = field(default_factory=lambda: ["decoder.*.scale.*", "decoder.*.shift.*"])
    adapt_anchor: float = 0.0
    adapt_holdout: bool = False


#: ``LearnerConfig`` options that change only how ``adapt`` runs on a trained model, never training:
#: ``BaseLearner.set_adaptation`` (``evaluate --adapt-option``) overrides them on a loaded checkpoint.
ADAPTATION_OPTIONS = ("adapt_params", "adapt_anchor", "adapt_holdout")


@dataclass
class ValidationExample:
    """What a validation step returns for the images callback: the first item of its batch, trimmed.

    Attributes:
        predicted: (T, n_mels) predicted mel.
        target: (T, n_mels) recorded mel.
        alignment: (T, L) soft alignment, when the pass ran the aligner.
        memory_reads: (T, N) read weights over memory slots (memory-augmented learner).
    """

    predicted: torch.Tensor
    target: torch.Tensor
    alignment: Optional[torch.Tensor] = None
    memory_reads: Optional[torch.Tensor] = None


def check_adaptation(config: LearnerConfig, prefix: str = "") -> None:
    """Refuse adaptation options no run can use (one line naming the key ``prefix + key``).

    Raises:
        LightningTTSError: a negative ``adapt_anchor``.
    """
    if config.adapt_anchor < 0:
        raise LightningTTSError(f"{prefix}adapt_anchor must be >= 0, got {config.adapt_anchor}")


def shape_text(tensor: torch.Tensor) -> str:
    """A tensor's shape as ``(40, 128)``."""
    return "(" + ", ".join(str(n) for n in tensor.shape) + ")"


def tensor_mismatches(there: Mapping[str, torch.Tensor], here: Mapping[str, torch.Tensor]) -> list[str]:
    """What keeps the tensors ``there`` (a source) from loading into ``here``: one phrase per tensor
    that is missing on either side or has another shape (empty: they load)."""
    problems = [f"{name} is here but not there" if name not in there else
                f"{name} has shape {shape_text(there[name])} there and {shape_text(tensor)} here"
                for name, tensor in here.items() if name not in there or there[name].shape != tensor.shape]
    return problems + [f"{name} is there but not here" for name in there if name not in here]


def _under(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a state dict that are ``prefix`` or lie under ``prefix.``."""
    return {k: v for k, v in state.items() if k == prefix or k.startswith(f"{prefix}.")}


class BaseLearner(pl.LightningModule, ABC):
    """Shared machinery of all learners.

    Args:
        symbols: the text symbol table (stored with the checkpoint).
        speakers: the training speakers, in table order.
        features: ``FeatureParams`` as a dict.
        model: the ``model`` section (``ModelConfig``).
        loss: the ``loss`` section (``LossConfig``).
        optim: the ``optim`` section (``OptimConfig``).
        learner: the ``learner`` section (this class's ``Config``).
        phonemes: whether the text front end uses CMUdict phonemes.

    Class attributes a learner sets: ``name`` (its ``learner.name``), ``Config`` (its options
    dataclass) and ``batches`` (the ``BatchPlan`` it trains on); for warm starts,
    ``warm_start_modules`` and ``initial_speaker_name``.
    """

    name: ClassVar[str] = ""
    batches: ClassVar[BatchPlan] = UtteranceBatches()
    Config: ClassVar[type[LearnerConfig]] = LearnerConfig
    #: this learner's own modules/parameters (besides ``model``) that a warm start copies from a
    #: source holding the same names with the same shapes (e.g. a speaker encoder)
    warm_start_modules: ClassVar[tuple[str, ...]] = ()
    #: the parameter holding a learned initial speaker vector, which a warm start seeds with the
    #: mean of a source's speaker table (None: the learner has none)
    initial_speaker_name: ClassVar[Optional[str]] = None
    synthesizes: bool = True  # False for a checkpoint trained without the acoustic loss (a speaker encoder)

    def __init__(self, symbols: list[str], speakers: list[str], features: dict, model: dict, loss: dict,
                 optim: dict, learner: dict, phonemes: bool = True) -> None:
        super().__init__()
        self.config = build(self.Config, learner, "learner")
        self.feature_params = FeatureParams(**features)
        model_config = build(ModelConfig, model, "model")
        loss_config = build(LossConfig, loss, "loss")
        self.optim = build(OptimConfig, optim, "optim")
        self.save_hyperparameters({"symbols": list(symbols), "speakers": list(speakers),
                                   "features": self.feature_params.to_dict(), "model": to_container(model_config),
                                   "loss": to_container(loss_config), "optim": to_container(self.optim),
                                   "learner": to_container(self.config), "phonemes": phonemes})
        self.text = TextProcessor(symbols, phonemes)
        self.speakers = list(speakers)
        try:
            self.model = AcousticModel(model_config, len(symbols), self.feature_params.n_mels,
                                       pitch=self.feature_params.pitch, energy=self.feature_params.energy)
        except ValueError as err:  # sizes that do not fit together (heads, postnet layers)
            raise ConfigError(f"model: {err}") from None
        self.criterion = AcousticLoss(loss_config)
        self.adapt_steps, self.adapt_lr = self.config.adapt_steps, self.config.adapt_lr
        self.adapt_params = list(self.config.adapt_params)
        check_adaptation(self.config, "learner.")
        self.schedule_offset = 0  # steps the model's schedules had taken before this run (a warm start's)
        self.warm_start_record: Optional[dict[str, Any]] = None
        self.training_cost: Optional[dict[str, Any]] = None  # what training it cost (callbacks.cost), once loaded

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Stamp the checkpoint format (so later versions can migrate old checkpoints) and what wrote
        it, and the warm start this run began from (``warm_start``), if any."""
        checkpoint["lightning_tts_format"] = CHECKPOINT_FORMAT
        checkpoint["lightning_tts_version"] = __version__
        checkpoint["lightning_tts_provenance"] = provenance()
        if self.warm_start_record is not None:
            checkpoint["warm_start"] = self.warm_start_record

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming: take back the run's own warm start (schedule offset, frozen aligner) before the
        optimiser is built."""
        self.restore_warm_start(checkpoint.get("warm_start"))

    # ---------------------------------------------------------------- warm start
    @property
    def schedule_step(self) -> int:
        """The step of the model's schedules: ``schedule_offset`` + this run's optimiser step."""
        return self.schedule_offset + self.global_step

    def restore_warm_start(self, record: Optional[dict[str, Any]]) -> None:
        """Take on a warm start's record (``learners.warm_start``): its ``schedule_offset`` and, if it
        says ``freeze_aligner``, a frozen ``model.aligner``. None: no warm start."""
        self.warm_start_record = record
        self.schedule_offset = int(record["schedule_offset"]) if record else 0
        if record and record.get("freeze_aligner"):
            self.model.aligner.requires_grad_(False)

    @torch.no_grad()
    def warm_start_from(self, source: "BaseLearner", origin: str) -> list[str]:
        """Copy into this learner what maps from ``source`` (a learner of any type): the whole
        acoustic model (``model.*``, required); each of ``warm_start_modules`` that ``source`` holds
        with the same names and shapes (else skipped with a warning); and the initial speaker
        vector (``initial_speaker_name``) from the mean of the source's speaker table.

        Args:
            source: the learner to copy from.
            origin: how errors name the source (``init_from PATH``).

        Returns:
            What was copied, e.g. ``["model", "speaker_init=mean(speaker_table)"]``.

        Raises:
            LightningTTSError: model tensors missing on one side or of other shapes, naming them.
        """
        ours, theirs = self.state_dict(), source.state_dict()
        update = _under(theirs, "model")
        problems = tensor_mismatches(update, _under(ours, "model"))
        if problems:
            more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
            raise LightningTTSError(f"{origin}: {'; '.join(problems[:2])}{more}")
        copied = ["model"]
        for module in self.warm_start_modules:
            there, here = _under(theirs, module), _under(ours, module)
            if not there or not here:
                continue
            problems = tensor_mismatches(there, here)
            if problems:
                log.warning("%s: not copying %s: %s", origin, module, problems[0])
                continue
            update.update(there)
            copied.append(module)
        name = self.initial_speaker_name
        if name is not None and SPEAKER_TABLE in theirs and name not in update:
            mean = theirs[SPEAKER_TABLE].mean(dim=0)
            if mean.shape != ours[name].shape:
                raise LightningTTSError(f"{origin}: the mean of {SPEAKER_TABLE} has shape {shape_text(mean)} there "
                                        f"and {name} has {shape_text(ours[name])} here")
            update[name] = mean
            copied.append(f"{name}=mean({SPEAKER_TABLE.split('.')[0]})")
        self.load_state_dict(update, strict=False)
        return copied

    def check_features(self, features: FeatureParams) -> None:
        """Refuse a run configuration whose features differ from this checkpoint's.

        Raises:
            LightningTTSError: naming the first differing feature parameter.
        """
        wanted, have = features.to_dict(), self.feature_params.to_dict()
        diff = [k for k in wanted if wanted[k] != have[k]]
        if diff:
            k = diff[0]
            raise LightningTTSError(f"checkpoint was trained with features.{k}={have[k]} but the config has "
                                    f"features.{k}={wanted[k]}: use the checkpoint's feature settings")

    # ---------------------------------------------------------------- model and loss
    def token_conditioning(self, extras: Optional[dict[str, torch.Tensor]]) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
        """The acoustic model's ``token_hook`` for an adapted state's ``extras`` (None: no per-phone conditioning)."""
        return None

    def run_model(self, batch: UtteranceBatch, speaker: torch.Tensor, params: Optional[dict[str, torch.Tensor]] = None,
                  durations: Optional[torch.Tensor] = None,
                  extras: Optional[dict[str, torch.Tensor]] = None) -> AcousticOutput:
        """Teacher-forced forward pass.

        Args:
            batch: utterances with their target mels.
            speaker: (B, speaker_dim) speaker vectors.
            params: overrides of named model parameters (the adapted ones).
            durations: (B, L) token durations to use instead of running the aligner.
            extras: an adapted state's learner-specific tensors (see ``token_conditioning``).
        """
        args = (batch.tokens, batch.token_lengths, speaker)
        kwargs = {"mels": batch.mels, "mel_lengths": batch.mel_lengths, "pitch": batch.pitch, "energy": batch.energy,
                  "durations": durations, "token_hook": self.token_conditioning(extras)}
        if params:
            return functional_call(self.model, params, args, kwargs, strict=False)
        return self.model(*args, **kwargs)

    @torch.no_grad()
    def align(self, batch: UtteranceBatch) -> torch.Tensor:
        """(B, L) hard durations of ``batch`` from the aligner (which no adaptation changes)."""
        return self.model.hard_durations(batch.tokens, batch.token_lengths, batch.mels, batch.mel_lengths)

    def support_mel_loss(self, batch: UtteranceBatch, speaker: torch.Tensor, params: Optional[dict[str, torch.Tensor]],
                         durations: torch.Tensor, extras: Optional[dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """Mel L1 of ``batch`` with the speaker vector (speaker_dim,) and given durations: the adaptation loss."""
        out = self.run_model(batch, speaker.expand(len(batch), -1), params, durations, extras)
        return masked_l1(out.mel, batch.mels, batch.mel_lengths)

    def acoustic_losses(self, batch: UtteranceBatch, speaker: torch.Tensor,
                        params: Optional[dict[str, torch.Tensor]] = None,
                        extras: Optional[dict[str, torch.Tensor]] = None) -> tuple[dict[str, torch.Tensor], AcousticOutput]:
        """Loss terms of a teacher-forced pass over ``batch`` with speaker vectors (B, speaker_dim)."""
        out = self.run_model(batch, speaker, params, extras=extras)
        return self.criterion(out, batch.mels, batch.mel_lengths, batch.token_lengths, self.schedule_step), out

    def log_meta_batch(self, tasks: int) -> None:
        """Log ``train/tasks_per_batch`` (this rank) and ``train/effective_meta_batch``: tasks per
        optimiser step over all ranks = tasks per rank x ranks x gradient-accumulation batches."""
        trainer = self._trainer
        ranks, accumulate = (trainer.world_size, trainer.accumulate_grad_batches) if trainer is not None else (1, 1)
        self.log("train/tasks_per_batch", float(tasks), on_step=True, on_epoch=False)
        self.log("train/effective_meta_batch", float(tasks * ranks * accumulate), on_step=True, on_epoch=False)

    def log_losses(self, stage: str, losses: dict[str, torch.Tensor], batch_size: int) -> None:
        """Log every term as ``stage/name``; metrics outside training are synced across ranks."""
        for key, value in losses.items():
            self.log(f"{stage}/{key}", value.detach(), prog_bar=key in ("loss", "mel_loss"), batch_size=batch_size,
                     sync_dist=stage != "train", on_step=stage == "train", on_epoch=stage != "train")

    @staticmethod
    def example(batch: UtteranceBatch, out: AcousticOutput) -> ValidationExample:
        """First item of a batch, trimmed: predicted/target mel and soft alignment (for images)."""
        t, n = int(batch.mel_lengths[0]), int(batch.token_lengths[0])
        alignment = out.attn_soft[0, :t, :n].detach() if out.attn_soft is not None else None
        return ValidationExample(out.mel[0, :t].detach(), batch.mels[0, :t].detach(), alignment)

    # ---------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> dict:
        """AdamW/Adam/SGD with linear warm-up, then cosine decay to ``min_lr_ratio`` (or constant).

        The warm-up counts ``schedule_offset`` + this run's steps (a warm start continues it where its
        source left it); the decay spans this run's steps after what is left of the warm-up.
        """
        o = self.optim
        name = o.name.lower()
        params = [p for p in self.parameters() if p.requires_grad]
        if name == "adamw":
            opt = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        elif name == "adam":
            opt = torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        elif name == "sgd":
            opt = torch.optim.SGD(params, lr=o.lr, momentum=o.betas[0], weight_decay=o.weight_decay)
        else:
            raise LightningTTSError(f"optim.name must be adamw, adam or sgd, got {o.name!r}")
        total = self._total_steps()
        warmup, floor, kind, offset = o.warmup_steps, o.min_lr_ratio, o.scheduler, self.schedule_offset
        if kind not in ("cosine", "constant"):
            raise LightningTTSError(f"optim.scheduler must be cosine or constant, got {kind!r}")
        warmup_left = max(0, warmup - offset)  # this run's steps still in the warm-up

        def factor(step: int) -> float:
            if step < warmup_left:
                return (offset + step + 1) / max(1, warmup)
            if kind == "constant" or total <= warmup_left:
                return 1.0
            progress = min(1.0, (step - warmup_left) / max(1, total - warmup_left))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _total_steps(self) -> int:
        """Optimiser steps of the run (for the schedule)."""
        trainer = self._trainer
        if trainer is None:
            return 1
        if trainer.max_steps and trainer.max_steps > 0:
            return trainer.max_steps
        return int(trainer.estimated_stepping_batches)

    def checkpoint_monitor(self) -> tuple[str, str]:
        """(logged key, "min"/"max") that picks the best checkpoint."""
        return "val/mel_loss", "min"

    # ---------------------------------------------------------------- adaptation interface
    def adaptable_parameters(self) -> dict[str, torch.nn.Parameter]:
        """Model parameters matched by ``adapt_params``."""
        chosen = {n: p for n, p in self.model.named_parameters()
                  if any(fnmatch.fnmatch(n, pattern) for pattern in self.adapt_params)}
        if self.adapt_params and not chosen:
            raise LightningTTSError(f"adapt_params {self.adapt_params} match no model parameter")
        return chosen

    @abstractmethod
    def adapt_start(self, support: UtteranceBatch) -> AdaptedState:
        """Where adaptation to the unseen speaker of ``support`` starts (before any gradient step)."""

    @torch.no_grad()
    def support_loss(self, support: UtteranceBatch, state: AdaptedState) -> float:
        """Mel L1 of ``support`` under ``state`` with the aligner's durations: how well a voice fits
        its own support set (what ``adapt`` minimises)."""
        return float(self.support_mel_loss(support, state.speaker, state.params or None, self.align(support),
                                           state.extras))

    def set_adaptation(self, options: Mapping[str, Any]) -> None:
        """Override ``ADAPTATION_OPTIONS`` of this (loaded) learner: how it adapts, not what it learned.

        Raises:
            LightningTTSError: a key that is not an adaptation option, or a bad value (one line).
        """
        unknown = sorted(set(options) - set(ADAPTATION_OPTIONS))
        if unknown:
            raise LightningTTSError(f"adaptation option {unknown[0]!r} is not one of {list(ADAPTATION_OPTIONS)}")
        config = build(self.Config, {**to_container(self.config), **options}, "learner")
        check_adaptation(config)
        self.config, self.adapt_params = config, list(config.adapt_params)
        self.adaptable_parameters()  # patterns that match nothing fail now

    def own_adapt_rate(self) -> Optional[float]:
        """The one rate that ``adapt(lr=None)`` uses, so that ``adapt(lr=r)`` with this ``r`` gives the same
        voice; None where its own rates are something else (MAML's learned rates)."""
        return self.adapt_lr

    @torch.enable_grad()
    def adapt(self, support: UtteranceBatch, steps: Optional[int] = None, lr: Optional[float] = None,
              progress: Optional[Any] = None) -> AdaptedState:
        """Fine-tune the speaker vector (from ``adapt_start``) and ``adapt_params`` on ``support`` with
        Adam, pulled toward the start by ``adapt_anchor``, early-stopped on a held-out support utterance
        with ``adapt_holdout`` (see ``LearnerConfig``).

        Args:
            support: K utterances of the new speaker.
            steps: gradient steps (default ``adapt_steps``); 0 returns the initial state.
            lr: Adam learning rate (default ``adapt_lr``).
            progress: optional callable invoked after each step with the step's loss.
        """
        steps = self.adapt_steps if steps is None else steps
        lr = self.adapt_lr if lr is None else lr
        was_training = self.training
        self.eval()
        with torch.no_grad():
            start = self.adapt_start(support)
        if steps == 0:
            self.train(was_training)
            return start
        speaker = start.speaker.detach().clone().requires_grad_(True)
        initial = {n: p.detach().clone() for n, p in self.adaptable_parameters().items()}
        params = {n: p.clone().requires_grad_(True) for n, p in initial.items()}
        opt = torch.optim.Adam([speaker, *params.values()], lr=lr)
        held: Optional[UtteranceBatch] = None
        if self.config.adapt_holdout and len(support) > 1:  # the start saw all K; only the steps do not
            held, support = support.select([len(support) - 1]), support.select(range(len(support) - 1))
        durations = self.align(support)  # (K, L), or (K - 1, L) with a held-out utterance
        held_durations = self.align(held) if held is not None else None
        best = (math.inf, start)
        for step in range(steps + 1):
            if held is not None:
                with torch.no_grad():  # score the live tensors; copy them only when they are the best so far
                    held_loss = float(self.support_mel_loss(held, speaker, params, held_durations, start.extras))
                if held_loss < best[0]:
                    best = (held_loss, start if step == 0 else AdaptedState(
                        speaker.detach().clone(), {n: p.detach().clone() for n, p in params.items()}, start.extras))
            if step == steps:
                break
            with fp32_gradients(support.mels.device):
                loss = self.support_mel_loss(support, speaker, params, durations, start.extras)
                if self.config.adapt_anchor > 0:
                    loss = loss + self.config.adapt_anchor * sum(((p - initial[n]) ** 2).sum() for n, p in params.items())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if progress is not None:
                progress(float(loss))
        self.train(was_training)
        if held is not None:
            return best[1]
        return AdaptedState(speaker.detach(), {n: p.detach() for n, p in params.items()}, start.extras)

    def query_losses(self, query: UtteranceBatch, state: AdaptedState) -> dict[str, torch.Tensor]:
        """Teacher-forced losses of ``query`` under an adapted state."""
        losses, _ = self.acoustic_losses(query, state.speaker.expand(len(query), -1), state.params or None, state.extras)
        return losses

    @torch.no_grad()
    def synthesize(self, tokens: torch.Tensor, state: AdaptedState, pace: float = 1.0) -> torch.Tensor:
        """(L,) token ids -> (T, n_mels) log-mel in the adapted voice."""
        tokens = tokens.to(self.device)[None]
        lengths = torch.tensor([tokens.shape[1]], device=self.device)
        args = (tokens, lengths, state.speaker.to(self.device)[None])
        kwargs = {"pace": pace, "token_hook": self.token_conditioning(state.extras)}
        if state.params:
            out = functional_call(self.model, state.params, args, kwargs, strict=False)
        else:
            out = self.model(*args, **kwargs)
        return out.mel[0, : int(out.mel_lengths[0])]

    # ---------------------------------------------------------------- few-shot test
    def few_shot_losses(self, task: Task, steps: Optional[int] = None) -> dict[str, torch.Tensor]:
        """Query mel loss of one task before and after adaptation on its support set."""
        before = self.query_losses(task.query, self.adapt(task.support, steps=0))["mel_loss"]
        after = self.query_losses(task.query, self.adapt(task.support, steps=steps))["mel_loss"]
        return {"query_mel_loss_unadapted": before, "query_mel_loss": after}

    def test_step(self, batch: TaskBatch, batch_idx: int) -> None:
        """Adapt to each test task's support set and score its query set."""
        for task in batch.tasks():
            self.log_losses("test", self.few_shot_losses(task), batch_size=1)
