"""Few-shot tasks, padded batches, and the samplers that draw them.

Every sampler yields *batches of dataset indices* and is handed to ``DataLoader(sampler=...,
batch_size=None)``, so Lightning finds it as ``dataloader.sampler`` and calls ``set_epoch`` on it
each epoch. Samplers shard by (rank, world_size) themselves; the Trainer runs with
``use_distributed_sampler=False``.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field, fields, replace
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


@dataclass
class TaskConfig:
    """Few-shot task shape (``data.tasks``).

    Attributes:
        shots: K support utterances per task.
        queries: Q query utterances per task.
        tasks_per_batch: T tasks per (meta-)batch, per rank.
        tasks_per_epoch: tasks drawn per training epoch, over all ranks.
        val_tasks_per_speaker: fixed validation/test tasks per held-out speaker.
    """

    shots: int = 5
    queries: int = 5
    tasks_per_batch: int = 4
    tasks_per_epoch: int = 400
    val_tasks_per_speaker: int = 2


@dataclass
class UtteranceBatch:
    """Padded utterances.

    Attributes:
        tokens: (B, L) token ids, 0-padded.
        token_lengths: (B,)
        mels: (B, T, n_mels) log-mels, 0-padded.
        mel_lengths: (B,)
        speaker_ids: (B,) index into the training speaker table; -1 for speakers outside it.
        pitch: (B, T) Hz, when the features include it.
        energy: (B, T), when the features include it.
        speakers: speaker name per item.
        utterance_ids: utterance id per item.
    """

    tokens: torch.Tensor
    token_lengths: torch.Tensor
    mels: torch.Tensor
    mel_lengths: torch.Tensor
    speaker_ids: torch.Tensor
    pitch: Optional[torch.Tensor] = None
    energy: Optional[torch.Tensor] = None
    speakers: list[str] = field(default_factory=list)
    utterance_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def mel_mask(self) -> torch.Tensor:
        """(B, T) True on real frames."""
        return torch.arange(self.mels.shape[1], device=self.mels.device)[None] < self.mel_lengths[:, None]

    @property
    def token_mask(self) -> torch.Tensor:
        """(B, L) True on real tokens."""
        return torch.arange(self.tokens.shape[1], device=self.tokens.device)[None] < self.token_lengths[:, None]

    def to(self, device: torch.device | str) -> "UtteranceBatch":
        """The batch with every tensor on ``device``."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)

    def select(self, rows: slice | Sequence[int]) -> "UtteranceBatch":
        """The sub-batch ``rows``, trimmed to its own longest item."""
        idx = list(range(len(self))[rows]) if isinstance(rows, slice) else list(rows)
        t_max, l_max = int(self.mel_lengths[idx].max()), int(self.token_lengths[idx].max())
        pick = torch.as_tensor(idx, device=self.tokens.device)
        return UtteranceBatch(
            tokens=self.tokens[pick, :l_max],
            token_lengths=self.token_lengths[pick],
            mels=self.mels[pick, :t_max],
            mel_lengths=self.mel_lengths[pick],
            speaker_ids=self.speaker_ids[pick],
            pitch=None if self.pitch is None else self.pitch[pick, :t_max],
            energy=None if self.energy is None else self.energy[pick, :t_max],
            speakers=[self.speakers[i] for i in idx],
            utterance_ids=[self.utterance_ids[i] for i in idx],
        )


@dataclass
class Task:
    """One few-shot task: K support and Q query utterances of one speaker (disjoint)."""

    speaker: str
    support: UtteranceBatch
    query: UtteranceBatch


@dataclass
class TaskBatch:
    """T tasks with the same K and Q, stored as two padded batches (task-major order).

    Attributes:
        support: (T*K, ...) support utterances; task t owns rows [t*K, (t+1)*K).
        query: (T*Q, ...) query utterances; task t owns rows [t*Q, (t+1)*Q).
        shots: K.
        queries: Q.
    """

    support: UtteranceBatch
    query: UtteranceBatch
    shots: int
    queries: int

    def __len__(self) -> int:
        return len(self.support) // self.shots

    def task(self, t: int) -> Task:
        """Task ``t`` with its own padding trimmed."""
        support = self.support.select(slice(t * self.shots, (t + 1) * self.shots))
        query = self.query.select(slice(t * self.queries, (t + 1) * self.queries))
        return Task(support.speakers[0], support, query)

    def tasks(self) -> list[Task]:
        """All T tasks."""
        return [self.task(t) for t in range(len(self))]


def _pad(seqs: list[torch.Tensor]) -> torch.Tensor:
    """Right-pad tensors of shape (len, *rest) to (B, max_len, *rest) with zeros."""
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)


def collate_utterances(items: list[dict]) -> UtteranceBatch:
    """Pad dataset items (``tokens`` (L,), ``mel`` (T, n_mels), optional ``pitch``/``energy`` (T,))."""
    mels = [it["mel"] for it in items]
    has = {k: all(k in it for it in items) for k in ("pitch", "energy")}
    return UtteranceBatch(
        tokens=_pad([it["tokens"] for it in items]),
        token_lengths=torch.tensor([len(it["tokens"]) for it in items]),
        mels=_pad(mels),
        mel_lengths=torch.tensor([m.shape[0] for m in mels]),
        speaker_ids=torch.tensor([it["speaker_id"] for it in items]),
        pitch=_pad([it["pitch"] for it in items]) if has["pitch"] else None,
        energy=_pad([it["energy"] for it in items]) if has["energy"] else None,
        speakers=[it["speaker"] for it in items],
        utterance_ids=[it["utterance_id"] for it in items],
    )


class TaskCollator:
    """Collate groups of K+Q utterances (one speaker each, task-major) into a ``TaskBatch``."""

    def __init__(self, shots: int, queries: int) -> None:
        self.shots, self.queries = shots, queries

    def __call__(self, items: list[dict]) -> TaskBatch:
        n = self.shots + self.queries
        groups = [items[i: i + n] for i in range(0, len(items), n)]
        support = collate_utterances([it for g in groups for it in g[: self.shots]])
        query = collate_utterances([it for g in groups for it in g[self.shots:]])
        return TaskBatch(support, query, self.shots, self.queries)


def group_by_speaker(speakers: Sequence[str]) -> dict[str, list[int]]:
    """Speaker -> positions of its items, in order of first appearance."""
    out: dict[str, list[int]] = {}
    for i, spk in enumerate(speakers):
        out.setdefault(spk, []).append(i)
    return out


def batch_utterances(batch: UtteranceBatch | TaskBatch) -> int:
    """How many utterances a training batch holds (a task batch: support + query)."""
    if isinstance(batch, TaskBatch):
        return len(batch.support) + len(batch.query)
    return len(batch)


class SpeakerGroupSampler(Sampler[list[int]]):
    """Batches of G speaker groups; a group is ``group_size`` distinct utterances of one speaker.

    Used for episodic tasks (group = K support + Q query, ``TaskCollator`` splits it) and for
    speakers x utterances batches (metric learning).

    Guarantees:
        - only speakers with at least ``group_size`` utterances are drawn;
        - the utterances of a group are distinct, so support and query never share an utterance;
        - within one global step the ``G * world_size`` groups have distinct speakers whenever the
          corpus has that many eligible speakers (otherwise distinct within each rank when possible);
        - rank r receives slice r of each global step, so ranks never receive the same group;
        - the batches are a function of (seed, epoch, rank, world_size) only.

    Args:
        speaker_indices: speaker -> dataset indices of its utterances.
        group_size: utterances per group (K + Q, or M).
        groups_per_batch: G, groups per batch on each rank.
        batches_per_epoch: batches each rank yields per epoch.
        seed: base seed.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(self, speaker_indices: dict[str, list[int]], group_size: int, groups_per_batch: int,
                 batches_per_epoch: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.speakers = sorted(s for s, idx in speaker_indices.items() if len(idx) >= group_size)
        if not self.speakers:
            raise ValueError(f"no speaker has {group_size} utterances")
        self.indices = {s: np.asarray(speaker_indices[s]) for s in self.speakers}
        self.group_size = group_size
        self.groups_per_batch = groups_per_batch
        self.batches_per_epoch = max(1, batches_per_epoch)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches ``__iter__`` yields (called by Lightning)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n_global = self.groups_per_batch * self.world_size
        for _ in range(self.batches_per_epoch):
            replace = n_global > len(self.speakers)
            if replace:  # too few speakers for distinct groups across ranks: each rank draws its own
                picks = np.concatenate([rng.choice(len(self.speakers), self.groups_per_batch,
                                                   replace=self.groups_per_batch > len(self.speakers))
                                        for _ in range(self.world_size)])
            else:
                picks = rng.choice(len(self.speakers), n_global, replace=False)
            groups = [rng.choice(self.indices[self.speakers[p]], self.group_size, replace=False) for p in picks]
            mine = groups[self.rank * self.groups_per_batch: (self.rank + 1) * self.groups_per_batch]
            yield [int(i) for g in mine for i in g]


class UtteranceBatchSampler(Sampler[list[int]]):
    """Shuffled batches of single utterances, length-bucketed, sharded over ranks.

    Guarantees: each epoch is a permutation (truncated to a multiple of ``batch_size * world_size``);
    ranks receive disjoint batches; batches hold utterances of similar length (sorted within windows
    of 50 batches) in random order; a function of (seed, epoch, rank, world_size).

    Args:
        indices: dataset indices to draw from.
        lengths: a length per index (for bucketing).
        batch_size: utterances per batch on each rank.
    """

    def __init__(self, indices: Sequence[int], lengths: Sequence[float], batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.indices = np.asarray(indices)
        self.lengths = np.asarray(lengths, dtype=np.float64)
        self.batch_size = min(batch_size, len(self.indices))
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches ``__iter__`` yields (called by Lightning)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, len(self.indices) // (self.batch_size * self.world_size))

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.indices))
        window = self.batch_size * 50
        for start in range(0, len(order), window):
            chunk = order[start: start + window]
            order[start: start + window] = chunk[np.argsort(self.lengths[chunk], kind="stable")]
        batches = [order[i: i + self.batch_size] for i in range(0, len(order) - self.batch_size + 1, self.batch_size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
        usable = (len(batches) // self.world_size) * self.world_size or len(batches)
        for b in batches[self.rank: usable: self.world_size]:
            yield [int(self.indices[i]) for i in b]


class FixedBatchSampler(Sampler[list[int]]):
    """A fixed list of batches (validation/test), sharded over ranks.

    Each rank gets ``ceil(n / world_size)`` batches (wrapping around), so every rank runs the same
    number of steps; with one rank every batch is seen exactly once.
    """

    def __init__(self, batches: list[list[int]], rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __len__(self) -> int:
        return -(-len(self.batches) // self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        for k in range(len(self)):
            yield self.batches[(k * self.world_size + self.rank) % len(self.batches)]


def fixed_groups(speaker_indices: dict[str, list[int]], group_size: int, groups_per_speaker: int,
                 seed: int) -> list[list[int]]:
    """Deterministic groups for evaluation: per speaker (sorted), ``groups_per_speaker`` draws of
    ``group_size`` distinct utterances; speakers with fewer utterances are left out."""
    groups = []
    for speaker in sorted(speaker_indices):
        idx = np.asarray(speaker_indices[speaker])
        if len(idx) < group_size:
            continue
        rng = np.random.default_rng([seed, zlib.crc32(speaker.encode())])  # stable per speaker
        for _ in range(groups_per_speaker):
            groups.append([int(i) for i in rng.choice(idx, group_size, replace=False)])
    return groups
