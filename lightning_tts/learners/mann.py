"""Memory-augmented meta-learning: adapting to a voice is *writing* its evidence into an external
memory, which the model reads while synthesising.

After Santoro et al. (2016), "Meta-Learning with Memory-Augmented Neural Networks" (content-based
addressing, least-recently-used access; see ``models/memory.py``). Per task:

1. **Write.** A segment encoder turns each support utterance into one vector per ``segment`` frames
   (``segment`` x hop_length / sample_rate seconds). The task's memory starts from a learned initial state
   (``reset``) and the support segments are written in order with LRUA writes.
2. **Read.** While synthesising a query, each *phone* forms a key from the (speaker-free) encoder
   output; its read vector is added to that phone's representation before the duration, pitch and
   length-regulated decoder (``AcousticModel(token_hook=...)``). Reads are per phone rather than per
   frame because (a) a phone's key is known before the durations are predicted, so the read can shape
   duration and pitch too, while the length regulator still gives every frame the read of its phone;
   (b) there are far fewer phones than frames, so far fewer reads; and (c) the read weights over
   (phones x slots) show which support evidence each sound used. A global read with a learned key gives the speaker vector
   that drives the decoder's conditional layer norms.
3. **Learn.** The loss is the query's acoustic loss (mel, duration, alignment) under the memory its
   own support wrote, plus ``evidence_weight`` x a GE2E loss (Wan et al., 2018) on the mean written
   vector of each support utterance, with the batch's tasks (distinct speakers) as classes. Why: with
   the acoustic loss alone (and also with an auxiliary regression of the query's long-term spectrum
   from the memory) training collapsed every written segment of every speaker onto one direction,
   so held-out query loss was the same with the speaker's own memory as with another speaker's.
   The GE2E term makes the evidence discriminative from the first step; the acoustic loss decides
   how it is read.

``adapt`` writes the support set (no transcripts needed, so ``synthesize --reference`` works too) and
stores the memory; optional fine-tune steps then tune the speaker vector and ``adapt_params`` with
the memory fixed. Validation logs the query mel loss with the task's own memory (``val/mel_loss``),
an empty (freshly reset) memory (``val/mel_loss_empty``) and another task's memory
(``val/mel_loss_other``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from lightning_tts.data.plans import TaskBatches
from lightning_tts.data.tasks import Task, TaskBatch, UtteranceBatch
from lightning_tts.learners import register_learner
from lightning_tts.learners.base import AdaptedState, BaseLearner, LearnerConfig, ValidationExample
from lightning_tts.models.acoustic import AcousticOutput
from lightning_tts.models.memory import ExternalMemory, MemoryConfig, MemoryState, select_tasks
from lightning_tts.models.speaker_encoder import SegmentEncoder, SegmentEncoderConfig
from lightning_tts.models.speaker_losses import GE2ELoss


@dataclass
class MANNConfig(LearnerConfig):
    """Options of ``MANNLearner``.

    Attributes:
        evidence_weight: weight of the GE2E loss on the written evidence (0 turns it off).
        memory: ``ExternalMemory`` shape (slots, dim, gamma, learned_init).
        encoder: ``SegmentEncoder`` sizes (channels, layers, segment); its width is ``memory.dim``.
        adapt_steps: fine-tune steps after writing (default 0: adapting is writing).
    """

    name: str = "mann"
    adapt_steps: int = 0
    evidence_weight: float = 1.0
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    encoder: SegmentEncoderConfig = field(default_factory=SegmentEncoderConfig)


@register_learner
class MANNLearner(BaseLearner):
    """Memory-augmented TTS learner: write the support set, read while synthesising.

    Args: see ``BaseLearner`` (options: ``MANNConfig``).

    Example::

        python -m lightning_tts fit --config conf/learner/mann.yaml learner.memory.slots=32
    """

    name = "mann"
    batches = TaskBatches()
    Config = MANNConfig
    warm_start_modules = ("memory", "writer", "key_proj", "read_proj", "speaker_key", "speaker_out")

    def __init__(self, **sections: Any) -> None:
        super().__init__(**sections)
        mem = self.config.memory
        self.memory = ExternalMemory(mem)
        self.writer = SegmentEncoder(self.feature_params.n_mels, self.config.encoder, mem.dim)
        self.key_proj = nn.Linear(self.model.dim, mem.dim)
        self.read_proj = nn.Linear(mem.dim, self.model.dim)
        self.speaker_key = nn.Parameter(0.1 * torch.randn(mem.dim))
        self.speaker_out = nn.Linear(mem.dim, self.model.speaker_dim)
        self.evidence_weight = self.config.evidence_weight
        self.evidence_loss = GE2ELoss()
        self._recorded: Optional[list[torch.Tensor]] = None  # read weights of the hook's calls, when recording

    # ---------------------------------------------------------------- memory
    def write_support(self, support: UtteranceBatch, tasks: int) -> MemoryState:
        """Fresh memories for ``tasks`` tasks, each written with its support rows (task-major, K per task)."""
        return self.memory.write_tasks(*self.writer(support.mels, support.mel_lengths), tasks)

    def speaker_from_memory(self, memory: torch.Tensor) -> torch.Tensor:
        """(B, N, D) memories -> (B, speaker_dim) speaker vectors (the read with the learned speaker key)."""
        return self.speaker_out(self.memory.read_with_key(self.speaker_key, memory))

    def token_conditioning(self, extras: Optional[dict[str, torch.Tensor]]) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
        """Per-phone memory reads from ``extras["memory"]`` ((N, D) for one voice or (B, N, D))."""
        if not extras or "memory" not in extras:
            return None
        memory = extras["memory"]

        def read(x: torch.Tensor) -> torch.Tensor:  # (B, L, dim) -> (B, L, dim)
            mem = (memory if memory.dim() == 3 else memory[None]).to(x.dtype).expand(x.shape[0], -1, -1)
            weights = self.memory.address(self.key_proj(x), mem)  # (B, L, N)
            if self._recorded is not None:
                self._recorded.append(weights.detach())
            return self.read_proj(self.memory.read(weights, mem))

        return read

    def memory_state_losses(self, query: UtteranceBatch,
                            memory: torch.Tensor) -> tuple[dict[str, torch.Tensor], AcousticOutput]:
        """Acoustic losses of ``query`` rows, each reading its own (B, N, D) memory."""
        return self.acoustic_losses(query, self.speaker_from_memory(memory), extras={"memory": memory})

    def _query_memories(self, state: MemoryState, batch: TaskBatch) -> torch.Tensor:
        """(T*Q, N, D): each query row's task memory."""
        index = torch.arange(len(batch), device=state.memory.device).repeat_interleave(batch.queries)
        return select_tasks(state, index).memory

    # ---------------------------------------------------------------- Lightning steps
    def training_step(self, batch: TaskBatch, batch_idx: int) -> torch.Tensor:
        vectors, mask = self.writer(batch.support.mels, batch.support.mel_lengths)  # (T*K, S, D), (T*K, S)
        state = self.memory.write_tasks(vectors, mask, len(batch))
        losses, _ = self.memory_state_losses(batch.query, self._query_memories(state, batch))
        if len(batch) > 1:
            m = mask[:, :, None].to(vectors.dtype)
            per_utterance = (vectors * m).sum(1) / m.sum(1).clamp_min(1.0)  # (T*K, D)
            labels = torch.arange(len(batch), device=vectors.device).repeat_interleave(batch.shots)
            losses["evidence_loss"] = self.evidence_loss(per_utterance, labels)
            losses["loss"] = losses["loss"] + self.evidence_weight * losses["evidence_loss"]
        self.log_losses("train", {f"query_{k}" if k != "loss" else k: v for k, v in losses.items()},
                        batch_size=len(batch))
        self.log_meta_batch(len(batch))
        return losses["loss"]

    def validation_step(self, batch: TaskBatch, batch_idx: int) -> ValidationExample:
        """Query losses with the task's own memory, an empty memory, and the next task's memory."""
        state = self.write_support(batch.support, len(batch))
        own = self._query_memories(state, batch)
        self._recorded = []
        losses, out = self.memory_state_losses(batch.query, own)
        weights = self._recorded[0][0]  # (L, N) read weights of the first query's phones
        self._recorded = None
        empty = self.memory.reset(len(batch.query), own.device, own.dtype).memory
        losses["mel_loss_empty"] = self.memory_state_losses(batch.query, empty)[0]["mel_loss"]
        if len(batch) > 1:
            other = torch.roll(own.view(len(batch), batch.queries, *own.shape[1:]), 1, dims=0).view_as(own)
            losses["mel_loss_other"] = self.memory_state_losses(batch.query, other)[0]["mel_loss"]
        self.log_losses("val", losses, batch_size=len(batch.query))
        example = self.example(batch.query, out)
        n = int(batch.query.token_lengths[0])
        example.memory_reads = expand_to_frames(weights[:n], out.durations[0, :n])
        return example

    # ---------------------------------------------------------------- adaptation interface
    def state_from_memory(self, state: MemoryState) -> AdaptedState:
        """The adapted voice of one written memory."""
        return AdaptedState(self.speaker_from_memory(state.memory)[0],
                            extras={"memory": state.memory[0], "usage": state.usage[0]})

    def adapt_start(self, support: UtteranceBatch) -> AdaptedState:
        """Write the support set into a fresh memory (transcripts are not used)."""
        return self.reference_state(support.mels, support.mel_lengths)

    def reference_state(self, mels: torch.Tensor, lengths: torch.Tensor) -> AdaptedState:
        """Zero-shot voice: write reference mels (K, T, n_mels) into a fresh memory (``ReferenceCloning``)."""
        with torch.no_grad():
            return self.state_from_memory(self.memory.write_tasks(*self.writer(mels, lengths), 1))

    def initial_speaker(self) -> torch.Tensor:
        """The speaker vector of an empty (freshly reset) memory."""
        return self.speaker_from_memory(self.memory.reset(1).memory)[0]

    def few_shot_losses(self, task: Task, steps: Optional[int] = None) -> dict[str, torch.Tensor]:
        """Query mel loss with an empty memory, and after writing (and fine-tuning, if steps) the support set."""
        empty = self.memory.reset(1).memory[0]
        before = self.query_losses(task.query, AdaptedState(self.initial_speaker(), extras={"memory": empty}))
        after = self.query_losses(task.query, self.adapt(task.support, steps=steps))
        return {"query_mel_loss_unadapted": before["mel_loss"], "query_mel_loss": after["mel_loss"]}

    @torch.no_grad()
    def read_weights(self, tokens: torch.Tensor, state: AdaptedState) -> tuple[torch.Tensor, torch.Tensor]:
        """Synthesise ``tokens`` (L,) in ``state``'s voice; return its (T, n_mels) mel and the (T, N)
        memory read weights of each output frame (its phone's read)."""
        tokens = tokens.to(self.device)[None]
        lengths = torch.tensor([tokens.shape[1]], device=self.device)
        self._recorded = []
        try:
            out = self.model(tokens, lengths, state.speaker.to(self.device)[None],
                             token_hook=self.token_conditioning(state.extras))
            weights = self._recorded[0][0]  # (L, N)
        finally:
            self._recorded = None
        return out.mel[0, : int(out.mel_lengths[0])], expand_to_frames(weights, out.durations[0])


def expand_to_frames(weights: torch.Tensor, durations: torch.Tensor) -> torch.Tensor:
    """Per-phone (L, N) weights -> per-frame (T, N), repeating each phone's row for its frames."""
    return torch.repeat_interleave(weights, durations.long().clamp_min(0), dim=0)
