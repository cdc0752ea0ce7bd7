"""MAML: learn an initialisation (and per-step inner learning rates) that adapts to a new voice in a
few gradient steps.

Model-Agnostic Meta-Learning (Finn et al., 2017) with first-order MAML as an option, per-step learnable
inner rates per tensor (MAML++, Antoniou et al., 2019) or per element (Meta-SGD, Li et al., 2017), and a
configurable adapted subset (the speaker vector is always adapted; by default the decoder and output
layer too; cf. Meta-TTS, Huang et al., 2022).

Where adaptation starts (``speaker_start``): ``learned``, one learned initial speaker vector for every
voice (the mean voice); ``encoder``, a zero-shot estimate of the voice from its support set — a
speaker encoder's centroid embedding through a linear projection (the metric learner's ``encoder`` and
``speaker_proj``, so ``init_from`` a metric run brings both) — which the inner loop then refines; or
``memory``, the memory-augmented learner's zero-shot speaker vector — the support set written into a
fresh external memory, read with a learned key and mapped to the speaker vector (its ``writer``,
``memory``, ``speaker_key`` and ``speaker_out``, which ``init_from`` a MANN run brings; its per-phone
reads are not used). The modules of the start are meta-trained with the rest (the meta-gradient
reaches the start through the inner steps).

For each task of an episodic batch, the inner loop takes ``inner_steps`` SGD steps on the support
mel loss; the query loss under the adapted weights, averaged over tasks, is the meta-loss that the
outer optimiser minimises.

Two inner-loop backends compute the same meta-gradient (tested against each other and against finite
differences): ``higher`` (``innerloop_ctx``, which differentiates through every parameter) and
``func`` (``torch.func.functional_call`` over the adapted tensors only), the default because it
differentiates only the adapted tensors (timings: README "Performance", ``python -m benchmarks``).
This is the only module that imports ``higher``. Facts about
``higher`` 0.2.1 that shaped it: ``copy_initial_weights=False`` (otherwise no meta-gradient reaches
the model, silently); first order keeps tracking and detaches the inner gradients through
``grad_callback`` (``track_higher_grads=False`` leaves the grads None and breaks DDP's all-reduce).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, List, Mapping, Optional

import higher
import torch
from torch import nn
from torch.func import functional_call

from lightning_tts.data.plans import TaskBatches
from lightning_tts.data.tasks import Task, TaskBatch, UtteranceBatch
from lightning_tts.errors import LightningTTSError
from lightning_tts.learners import register_learner
from lightning_tts.learners.base import AdaptedState, BaseLearner, LearnerConfig, ValidationExample
from lightning_tts.models.acoustic import AcousticModel, AcousticOutput
from lightning_tts.models.losses import masked_l1
from lightning_tts.models.memory import ExternalMemory, MemoryConfig
from lightning_tts.models.speaker_encoder import SegmentEncoder, SegmentEncoderConfig, SpeakerEncoder, SpeakerEncoderConfig

BACKENDS = ("higher", "func")
SPEAKER_STARTS = ("learned", "encoder", "memory")
LR_SHAPES = ("tensor", "element")
#: Why MAML takes no adaptation-regularisation options (``adapt_anchor``, ``adapt_holdout``,
#: ``set_adaptation``): it adapts with the inner loop that meta-training shaped.
MAML_ADAPTATION = ("MAML adapts with its meta-learned inner loop (learned rates tied to its adapted parameters): "
                   "adaptation options (adapt_params, adapt_anchor, adapt_holdout) can change only learners that "
                   "adapt with Adam (multispeaker, metric, mann)")


@dataclass
class MAMLConfig(LearnerConfig):
    """Options of ``MAMLLearner``.

    Attributes:
        inner_steps: inner SGD steps during meta-training.
        inner_lr: initial (or fixed) inner learning rate.
        first_order: drop second-order terms (FOMAML).
        learn_inner_lr: learn the inner rates (MAML++; else they stay ``inner_lr``).
        inner_lr_shape: ``tensor`` (one rate per adapted tensor and inner step, MAML++) or ``element``
            (one per adapted element and inner step, Meta-SGD; ``func`` backend, learned rates).
        backend: ``func`` or ``higher`` (same meta-gradient).
        adapt_steps: inner steps when adapting after training (validation, ``adapt``); steps past
            ``inner_steps`` reuse the last learned rates.
        adapt_lr: a fixed rate for adaptation instead of the learned ones (None: the learned ones).
        adapt_params: fnmatch patterns of model parameters adapted besides the speaker vector.
        speaker_start: ``learned`` (one learned initial speaker vector), ``encoder`` or ``memory`` (a
            zero-shot estimate from the support set by a speaker encoder or an external memory; see the
            module docstring; ``func`` backend only).
        encoder: ``SpeakerEncoder`` sizes for ``speaker_start=encoder`` (those of the metric run that
            ``init_from`` names).
        memory: ``ExternalMemory`` shape for ``speaker_start=memory`` (that of the MANN run that
            ``init_from`` names: its ``learner.memory``).
        writer: ``SegmentEncoder`` sizes for ``speaker_start=memory`` (the MANN run's ``learner.encoder``).
        speaker_consistency: weight of a speaker-consistency term in the meta-loss (0: none): the
            mean of 1 - cosine between the speaker encoder's embeddings of each predicted query mel
            and of its recording (YourTTS's speaker consistency loss); the encoder judges with its
            weights held constant, so the term cannot be lowered by changing the judge
            (``speaker_start=encoder``).
    """

    name: str = "maml"
    adapt_steps: int = 10
    adapt_lr: Optional[float] = None
    adapt_params: List[str] = field(default_factory=lambda: ["decoder.*", "mel_out.*"])
    inner_steps: int = 3
    inner_lr: float = 0.05
    first_order: bool = False
    learn_inner_lr: bool = True
    inner_lr_shape: str = "tensor"
    backend: str = "func"
    speaker_start: str = "learned"
    encoder: SpeakerEncoderConfig = field(default_factory=SpeakerEncoderConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    writer: SegmentEncoderConfig = field(default_factory=SegmentEncoderConfig)
    speaker_consistency: float = 0.0


def check_precision(precision: str) -> None:
    """MAML differentiates through ``torch.autograd.grad`` inner steps that Lightning's fp16
    ``GradScaler`` never scales, so fp16 inner gradients underflow silently; bf16 has fp32's range.

    Raises:
        LightningTTSError: ``precision`` is an fp16 setting.
    """
    if precision in ("16-mixed", "16", "16-true", "half"):
        raise LightningTTSError(f"trainer.precision={precision} is not supported by MAML (its inner-loop gradients "
                                f"are not loss-scaled and underflow in fp16): use trainer.precision=bf16-mixed")


class SpeakerModel(nn.Module):
    """The acoustic model with its own speaker vector: the module whose weights MAML adapts.

    Args:
        model: the shared acoustic model.
        speaker: (speaker_dim,) the learned initial speaker vector (a parameter of the learner).
    """

    def __init__(self, model: AcousticModel, speaker: nn.Parameter) -> None:
        super().__init__()
        self.model = model
        self.speaker = speaker

    def forward(self, batch: UtteranceBatch, durations: Optional[torch.Tensor] = None) -> AcousticOutput:
        """Teacher-forced pass over ``batch`` with this module's speaker vector for every item."""
        return self.model(batch.tokens, batch.token_lengths, self.speaker.expand(len(batch), -1), mels=batch.mels,
                          mel_lengths=batch.mel_lengths, pitch=batch.pitch, energy=batch.energy, durations=durations)


@register_learner
class MAMLLearner(BaseLearner):
    """Model-agnostic meta-learning of a TTS initialisation over speaker tasks.

    Args: see ``BaseLearner`` (options: ``MAMLConfig``).

    Example::

        python -m lightning_tts fit --config conf/learner/maml.yaml learner.first_order=true
    """

    name = "maml"
    batches = TaskBatches()
    Config = MAMLConfig
    warm_start_modules = ("speaker_init", "encoder", "speaker_proj", "memory", "writer", "speaker_key", "speaker_out")
    initial_speaker_name = "speaker_init"

    def __init__(self, **sections: Any) -> None:
        super().__init__(**sections)
        c = self.config
        inner_steps, inner_lr, backend = c.inner_steps, c.inner_lr, c.backend
        self.adapt_lr = c.adapt_lr or inner_lr
        if backend not in BACKENDS:
            raise LightningTTSError(f"learner.backend must be one of {BACKENDS}, got {backend!r}")
        if inner_steps < 1:
            raise LightningTTSError(f"learner.inner_steps must be >= 1, got {inner_steps}")
        if c.speaker_start not in SPEAKER_STARTS:
            raise LightningTTSError(f"learner.speaker_start must be one of {SPEAKER_STARTS}, got {c.speaker_start!r}")
        if c.speaker_start != "learned" and backend != "func":
            raise LightningTTSError(f"learner.speaker_start={c.speaker_start} needs learner.backend=func")
        if c.speaker_consistency < 0 or (c.speaker_consistency > 0 and c.speaker_start != "encoder"):
            raise LightningTTSError(f"learner.speaker_consistency must be >= 0 and needs learner.speaker_start=encoder, "
                                    f"got {c.speaker_consistency} with speaker_start={c.speaker_start!r}")
        if c.adapt_anchor != 0 or c.adapt_holdout:
            raise LightningTTSError(MAML_ADAPTATION)
        if c.inner_lr_shape not in LR_SHAPES:
            raise LightningTTSError(f"learner.inner_lr_shape must be one of {LR_SHAPES}, got {c.inner_lr_shape!r}")
        if c.inner_lr_shape == "element" and (backend != "func" or not c.learn_inner_lr):
            raise LightningTTSError("learner.inner_lr_shape=element needs learner.backend=func and learner.learn_inner_lr=true")
        self.inner_steps, self.first_order, self.backend = inner_steps, c.first_order, backend
        self.fixed_adapt_lr = c.adapt_lr
        self.speaker_consistency = float(c.speaker_consistency)
        self.speaker_init = nn.Parameter(0.1 * torch.randn(self.model.speaker_dim))
        self.encoder: Optional[SpeakerEncoder] = None
        if c.speaker_start == "encoder":
            self.encoder = SpeakerEncoder(self.feature_params.n_mels, c.encoder)
            self.speaker_proj = nn.Linear(self.encoder.dim, self.model.speaker_dim)
        if c.speaker_start == "memory":  # the modules and names of MANNLearner's speaker vector
            self.memory = ExternalMemory(c.memory)
            self.writer = SegmentEncoder(self.feature_params.n_mels, c.writer, c.memory.dim)
            self.speaker_key = nn.Parameter(0.1 * torch.randn(c.memory.dim))
            self.speaker_out = nn.Linear(c.memory.dim, self.model.speaker_dim)
        if c.speaker_start != "learned":
            self.speaker_init.requires_grad_(False)  # unused: the start comes from the support set
        adaptable = self.adaptable_parameters()
        self.adapted_names = ["speaker"] + [f"model.{n}" for n in adaptable]
        self.element_lrs: Optional[nn.ParameterList] = None
        if c.inner_lr_shape == "element":  # (inner_steps, *shape) per adapted tensor, in adapted_names order
            shapes = [self.speaker_init.shape] + [p.shape for p in adaptable.values()]
            self.element_lrs = nn.ParameterList([nn.Parameter(torch.full((inner_steps, *shape), float(inner_lr)))
                                                 for shape in shapes])
        else:  # (inner_steps, adapted tensors)
            rates = torch.full((inner_steps, len(self.adapted_names)), float(inner_lr))
            if c.learn_inner_lr:
                self.inner_lrs = nn.Parameter(rates)
            else:
                self.register_buffer("inner_lrs", rates)

    def setup(self, stage: str) -> None:
        """Refuse fp16 mixed precision (see ``check_precision``)."""
        if self._trainer is not None:
            check_precision(str(self.trainer.precision))

    # ---------------------------------------------------------------- warm start
    def warm_start_from(self, source: BaseLearner, origin: str) -> list[str]:
        """``BaseLearner.warm_start_from``, refusing a source that cannot give a zero-shot start: with
        ``speaker_start=encoder`` or ``memory`` every module of the start must come from ``source``, built
        with the same sizes (a metric run's ``learner.encoder``; a MANN run's ``learner.memory`` and
        ``learner.encoder``, MAML's ``learner.writer``), else the start would be random.

        Raises:
            LightningTTSError: a module of the start not copied, or sizes that differ, in one line.
        """
        copied = super().warm_start_from(source, origin)
        c = self.config
        if c.speaker_start == "learned":
            return copied
        kind, modules, sizes = {  # (source learner, modules of the start, (source option, this run's option, value))
            "encoder": ("metric", ("encoder", "speaker_proj"), [("encoder", "encoder", c.encoder)]),
            "memory": ("mann", ("memory", "writer", "speaker_key", "speaker_out"),
                       [("memory", "memory", c.memory), ("encoder", "writer", c.writer)]),
        }[c.speaker_start]
        missing = [m for m in modules if m not in copied]
        theirs = source.config
        same_kind = isinstance(source, MAMLLearner)  # a MAML run with this start names the options as this run does
        differ = [(o if same_kind else t, o) for t, o, value in sizes if getattr(theirs, o if same_kind else t, None) != value]
        if missing or differ:
            what = (f"not copied: {', '.join(missing)}" if missing else
                    f"its learner.{differ[0][0]} differs from this run's learner.{differ[0][1]}")
            raise LightningTTSError(f"{origin}: learner.speaker_start={c.speaker_start} needs a {kind} run of the same "
                                    f"sizes ({what})")
        return copied

    # ---------------------------------------------------------------- inner loops
    def net(self) -> SpeakerModel:
        """A view of (acoustic model, initial speaker vector) sharing this learner's parameters."""
        return SpeakerModel(self.model, self.speaker_init)

    def start_speaker(self, support: UtteranceBatch) -> torch.Tensor:
        """(speaker_dim,) where the inner loop starts for the voice of ``support`` (``start_speakers``)."""
        return self.start_speakers(support, 1)[0]

    def start_speakers(self, support: UtteranceBatch, tasks: int) -> torch.Tensor:
        """(T, speaker_dim) where the inner loop starts for each of ``tasks`` voices (``speaker_start``):
        the learned initial vector; the projected centroid of the task's support embeddings; or the
        speaker vector read from a fresh memory that the task's support set was written into. One
        batched pass over all T tasks (their memories are written side by side).

        Args:
            support: (T*K, ...) support utterances, task-major (task t owns rows [t*K, (t+1)*K)).
            tasks: T.
        """
        start = self.config.speaker_start
        if start == "encoder":
            assert self.encoder is not None
            return self.speaker_proj(self.encoder.centroids(support.mels, support.mel_lengths, tasks))
        if start == "memory":
            state = self.memory.write_tasks(*self.writer(support.mels, support.mel_lengths), tasks)  # (T, N, D) memories
            return self.speaker_out(self.memory.read_with_key(self.speaker_key, state.memory))
        return self.speaker_init.expand(tasks, -1)

    def step_rates(self, step: int) -> list[torch.Tensor]:
        """Inner learning rate of each adapted tensor at ``step`` (the last row past ``inner_steps``): a
        scalar, or a tensor of its shape for ``inner_lr_shape=element``."""
        step = min(step, self.inner_steps - 1)
        if self.element_lrs is not None:
            return [rates[step] for rates in self.element_lrs]
        row = self.inner_lrs[step]
        return [row[i] for i in range(len(self.adapted_names))]

    def _meta_losses_higher(self, task: Task, steps: int, first_order: bool) -> dict[str, torch.Tensor]:
        """Query losses after an inner loop through ``higher.innerloop_ctx``."""
        net = self.net()
        named = dict(net.named_parameters())
        groups = [{"params": [named[n]]} for n in self.adapted_names]
        inner_opt = torch.optim.SGD(groups, lr=1.0)  # rates come from ``override`` at each step
        durations = self.align(task.support)
        callback: Optional[Callable[[list[torch.Tensor]], list[torch.Tensor]]] = (
            (lambda grads: [None if g is None else g.detach() for g in grads]) if first_order else None)
        with higher.innerloop_ctx(net, inner_opt, copy_initial_weights=False, track_higher_grads=True) as (fnet, diffopt):
            for step in range(steps):
                out = fnet(task.support, durations)
                loss = self._mel_l1(out, task.support)
                diffopt.step(loss, override={"lr": self.step_rates(step)}, grad_callback=callback)
            query_out = fnet(task.query)
        return self.criterion(query_out, task.query.mels, task.query.mel_lengths, task.query.token_lengths,
                              self.schedule_step)

    def inner_loop(self, support: UtteranceBatch, steps: int, order: str,
                   rates: Optional[Callable[[int], list[Any]]] = None,
                   progress: Optional[Callable[[float], None]] = None,
                   start: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """SGD on the support mel loss over the adapted tensors only (``torch.func``).

        Args:
            support: the support utterances.
            steps: inner steps.
            order: ``second`` (differentiate through the inner gradients), ``first`` (inner gradients
                are constants; the result still depends on the initial weights and the rates), or
                ``none`` (adaptation after training: every step starts from constants).
            rates: step -> one rate per adapted tensor (default: the learned/fixed inner rates).
            progress: called with each step's support loss.
            start: (speaker_dim,) the speaker vector to start from, when already computed for a batch
                of tasks (``start_speakers``); default: ``start_speaker(support)``.

        Returns:
            Adapted tensors by name (``speaker``, ``model.<param>``); detached when ``order="none"``.
        """
        net = self.net()
        named = dict(net.named_parameters())
        fast = {n: named[n] for n in self.adapted_names}
        fast["speaker"] = self.start_speaker(support) if start is None else start
        durations = self.align(support)
        rates = rates or self.step_rates
        for step in range(steps):
            if order == "none":
                fast = {n: p.detach().requires_grad_(True) for n, p in fast.items()}
            out = functional_call(net, fast, (support, durations), strict=False)
            loss = self._mel_l1(out, support)
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=order == "second")
            fast = {n: p - lr * g for (n, p), g, lr in zip(fast.items(), grads, rates(step))}
            if progress is not None:
                progress(float(loss.detach()))
        return {n: p.detach() for n, p in fast.items()} if order == "none" else fast

    def _meta_losses_func(self, task: Task, steps: int, first_order: bool,
                          start: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """Query losses after ``inner_loop`` (the ``torch.func`` backend) from ``start`` (see ``inner_loop``)."""
        fast = self.inner_loop(task.support, steps, "first" if first_order else "second", start=start)
        out = functional_call(self.net(), fast, (task.query,), strict=False)
        losses = self.criterion(out, task.query.mels, task.query.mel_lengths, task.query.token_lengths, self.schedule_step)
        if self.speaker_consistency > 0:
            losses["speaker_consistency"] = self.consistency_loss(out.mel, task.query)
            losses["loss"] = losses["loss"] + self.speaker_consistency * losses["speaker_consistency"]
        return losses

    def consistency_loss(self, predicted: torch.Tensor, query: UtteranceBatch) -> torch.Tensor:
        """Mean over the query utterances of 1 - cos(encoder(predicted mel), encoder(recorded mel)).
        The encoder's weights are constants in the judging: the gradient flows into the predicted mels
        only (so into the acoustic model, the rates and, through the start it gives, the encoder).

        Args:
            predicted: (Q, T, n_mels) teacher-forced predicted query mels.
            query: the query utterances (their recorded mels and lengths).
        """
        assert self.encoder is not None
        constants = {n: p.detach() for n, p in self.encoder.named_parameters()}
        predicted_emb = functional_call(self.encoder, constants, (predicted, query.mel_lengths))  # (Q, dim)
        with torch.no_grad():
            recorded_emb = self.encoder(query.mels, query.mel_lengths)  # (Q, dim)
        return (1.0 - (predicted_emb * recorded_emb).sum(dim=-1)).mean()

    def meta_losses(self, task: Task, steps: Optional[int] = None, first_order: Optional[bool] = None,
                    start: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """Losses on the query set of ``task`` after adapting on its support set (differentiable);
        ``start``: its precomputed start speaker vector (see ``inner_loop``). The ``higher`` backend, which
        only the learned start may use, starts from ``speaker_init`` itself and ignores it."""
        steps = self.inner_steps if steps is None else steps
        first_order = self.first_order if first_order is None else first_order
        if self.backend == "higher":
            return self._meta_losses_higher(task, steps, first_order)
        return self._meta_losses_func(task, steps, first_order, start)

    @staticmethod
    def _mel_l1(out: AcousticOutput, batch: UtteranceBatch) -> torch.Tensor:
        """Mel L1 of a teacher-forced pass over ``batch``."""
        return masked_l1(out.mel, batch.mels, batch.mel_lengths)

    # ---------------------------------------------------------------- Lightning steps
    def training_step(self, batch: TaskBatch, batch_idx: int) -> torch.Tensor:
        starts = self.start_speakers(batch.support, len(batch))  # (T, speaker_dim), one batched pass
        per_task = [self.meta_losses(task, start=start) for task, start in zip(batch.tasks(), starts)]
        losses = {k: torch.stack([t[k] for t in per_task]).mean() for k in per_task[0]}
        self.log_losses("train", {f"query_{k}" if k != "loss" else k: v for k, v in losses.items()},
                        batch_size=len(batch))
        self.log_meta_batch(len(batch))
        return losses["loss"]

    def validation_step(self, batch: TaskBatch, batch_idx: int) -> Optional[ValidationExample]:
        """Adapt to each validation speaker's support set; score its query set."""
        example: Optional[ValidationExample] = None
        for task in batch.tasks():
            state = self.adapt(task.support)
            losses, out = self.acoustic_losses(task.query, state.speaker.expand(len(task.query), -1), state.params)
            self.log_losses("val", losses, batch_size=1)
            example = example or self.example(task.query, out)
        return example

    # ---------------------------------------------------------------- adaptation interface
    def set_adaptation(self, options: Mapping[str, Any]) -> None:
        """Refused: the learned rates belong to the adapted parameters, and the inner loop is what
        meta-training shaped (see ``MAML_ADAPTATION``)."""
        raise LightningTTSError(MAML_ADAPTATION)

    def initial_speaker(self) -> torch.Tensor:
        """The learned initial speaker vector."""
        return self.speaker_init

    def adapt_start(self, support: UtteranceBatch) -> AdaptedState:
        """The meta-learned start for the voice of ``support`` (``start_speaker``), no parameter overrides."""
        return AdaptedState(self.start_speaker(support))

    def own_adapt_rate(self) -> Optional[float]:
        """``adapt_lr`` when set; else None: adaptation runs the inner loop's own (learned) rates."""
        return self.fixed_adapt_lr

    @torch.enable_grad()
    def adapt(self, support: UtteranceBatch, steps: Optional[int] = None, lr: Optional[float] = None,
              progress: Optional[Callable[[float], None]] = None) -> AdaptedState:
        """Inner-loop SGD from the learned initialisation, with the learned rates (or a fixed ``lr``)."""
        steps = self.adapt_steps if steps is None else steps
        lr = lr if lr is not None else self.fixed_adapt_lr
        rates = (lambda step: [lr] * len(self.adapted_names)) if lr is not None else None
        was_training = self.training
        self.eval()
        fast = self.inner_loop(support, steps, "none", rates, progress)
        self.train(was_training)
        params = {n[len("model."):]: v for n, v in fast.items() if n.startswith("model.")}
        return AdaptedState(fast["speaker"], params)
