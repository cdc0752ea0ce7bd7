"""Batch plans: what batches a learner trains and is evaluated on.

A learner names its plan (``batches = TaskBatches()``); ``SpeakerTaskDataModule`` asks the plan for
its samplers, fixed evaluation batches and collate functions, so the data module holds no
per-learner branches. Three plans:

- ``TaskBatches``: T few-shot tasks (K support + Q query utterances of one speaker each) per batch
  (MAML, memory-augmented learner);
- ``UtteranceBatches``: training-speaker utterances bucketed by length (the multi-speaker
  baseline); validated on the utterances held out from training speakers, tested on tasks;
- ``SpeakerBatches``: N speakers x M utterances per batch (metric learning).

Every plan's evaluation batches are fixed: a function of the data config and the split seed.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import Sampler

from lightning_tts.data.tasks import (
    SpeakerGroupSampler,
    TaskCollator,
    UtteranceBatchSampler,
    collate_utterances,
    fixed_groups,
)
from lightning_tts.errors import DataError

Collate = Callable[[list[dict]], Any]


@dataclass
class SplitIndices:
    """Dataset indices of one corpus reading, grouped as the plans need them.

    Attributes:
        train: training speaker -> its utterances (held-out ones removed).
        heldout: held-out utterances of training speakers.
        val: validation speaker -> its utterances.
        test: test speaker -> its utterances.
        durations: seconds, per dataset index.
    """

    train: dict[str, list[int]]
    heldout: list[int]
    val: dict[str, list[int]]
    test: dict[str, list[int]]
    durations: Sequence[float]

    def stage(self, stage: str) -> dict[str, list[int]]:
        """The speakers of ``val`` or ``test``."""
        return self.val if stage == "val" else self.test


def eligible(speakers: Mapping[str, list[int]], size: int, what: str) -> dict[str, list[int]]:
    """Speakers with at least ``size`` utterances; warns (naming ``what``) about the others."""
    short = sorted(s for s, idx in speakers.items() if len(idx) < size)
    if short:
        rank_zero_warn(f"{what}: {len(short)} speakers have fewer than {size} utterances and are left out "
                       f"(e.g. {short[:3]})")
    return {s: idx for s, idx in speakers.items() if len(idx) >= size}


def grouped_batches(speakers: Mapping[str, list[int]], size: int, per_batch: int, data: Mapping[str, Any],
                    stage: str) -> list[list[int]]:
    """Fixed evaluation batches of ``per_batch`` groups of ``size`` utterances of one speaker each."""
    usable = eligible(speakers, size, f"{stage} batches")
    groups = fixed_groups(usable, size, data["tasks"]["val_tasks_per_speaker"], data["splits"]["seed"])
    return [[i for g in groups[k: k + per_batch] for i in g] for k in range(0, len(groups), per_batch)]


class BatchPlan(ABC):
    """What a learner's batches are: training sampler, fixed evaluation batches, collate functions."""

    name: ClassVar[str]

    @abstractmethod
    def train_sampler(self, split: SplitIndices, data: Mapping[str, Any], seed: int, rank: int,
                      world: int) -> Sampler:
        """The training sampler (yields batches of dataset indices, sharded by rank)."""

    @abstractmethod
    def train_collate(self, data: Mapping[str, Any]) -> Collate:
        """Collate function of the training batches."""

    @abstractmethod
    def eval_batches(self, stage: str, split: SplitIndices, data: Mapping[str, Any]) -> tuple[list[list[int]], Collate]:
        """The fixed ``val`` or ``test`` batches (dataset indices) and their collate function."""


class GroupPlan(BatchPlan):
    """Batches of speaker groups (a group = utterances of one speaker)."""

    @abstractmethod
    def group_size(self, data: Mapping[str, Any]) -> int:
        """Utterances per group."""

    @abstractmethod
    def groups_per_batch(self, data: Mapping[str, Any]) -> int:
        """Groups per batch (per rank)."""

    @abstractmethod
    def groups_per_epoch(self, n_utterances: int, data: Mapping[str, Any]) -> int:
        """Groups drawn per training epoch (over all ranks)."""

    def train_sampler(self, split: SplitIndices, data: Mapping[str, Any], seed: int, rank: int,
                      world: int) -> Sampler:
        size, per_batch = self.group_size(data), self.groups_per_batch(data)
        speakers = eligible(split.train, size, f"train ({self.name} batches)")
        if not speakers:
            raise DataError(f"no training speaker has {size} utterances "
                            f"(data.tasks.shots + data.tasks.queries, or data.utterances_per_speaker)")
        n_groups = self.groups_per_epoch(sum(len(v) for v in speakers.values()), data)
        return SpeakerGroupSampler(speakers, size, per_batch, max(1, n_groups // (per_batch * world)), seed, rank,
                                   world)


@dataclass(frozen=True)
class TaskBatches(GroupPlan):
    """T few-shot tasks of K support + Q query utterances (``data.tasks``) per batch."""

    name: ClassVar[str] = "task"

    def group_size(self, data: Mapping[str, Any]) -> int:
        return data["tasks"]["shots"] + data["tasks"]["queries"]

    def groups_per_batch(self, data: Mapping[str, Any]) -> int:
        return data["tasks"]["tasks_per_batch"]

    def groups_per_epoch(self, n_utterances: int, data: Mapping[str, Any]) -> int:
        return data["tasks"]["tasks_per_epoch"]

    def train_collate(self, data: Mapping[str, Any]) -> Collate:
        return TaskCollator(data["tasks"]["shots"], data["tasks"]["queries"])

    def eval_batches(self, stage: str, split: SplitIndices, data: Mapping[str, Any]) -> tuple[list[list[int]], Collate]:
        batches = grouped_batches(split.stage(stage), self.group_size(data), self.groups_per_batch(data), data, stage)
        return batches, self.train_collate(data)


@dataclass(frozen=True)
class UtteranceBatches(BatchPlan):
    """Length-bucketed batches of ``data.batch_size`` training-speaker utterances; validation on the
    held-out utterances of training speakers; test on few-shot tasks (as ``TaskBatches``)."""

    name: ClassVar[str] = "utterance"

    def train_sampler(self, split: SplitIndices, data: Mapping[str, Any], seed: int, rank: int,
                      world: int) -> Sampler:
        indices = [i for idx in split.train.values() for i in idx]
        lengths = [split.durations[i] for i in indices]
        return UtteranceBatchSampler(indices, lengths, data["batch_size"], seed, rank, world)

    def train_collate(self, data: Mapping[str, Any]) -> Collate:
        return collate_utterances

    def eval_batches(self, stage: str, split: SplitIndices, data: Mapping[str, Any]) -> tuple[list[list[int]], Collate]:
        if stage == "test":
            return TaskBatches().eval_batches(stage, split, data)
        order = sorted(split.heldout, key=lambda i: split.durations[i])
        size = data["batch_size"]
        return [order[i: i + size] for i in range(0, len(order), size)], collate_utterances


@dataclass(frozen=True)
class SpeakerBatches(GroupPlan):
    """N speakers (``data.speakers_per_batch``) x M utterances (``data.utterances_per_speaker``) per batch."""

    name: ClassVar[str] = "speakers"

    def group_size(self, data: Mapping[str, Any]) -> int:
        return data["utterances_per_speaker"]

    def groups_per_batch(self, data: Mapping[str, Any]) -> int:
        return data["speakers_per_batch"]

    def groups_per_epoch(self, n_utterances: int, data: Mapping[str, Any]) -> int:
        return n_utterances // self.group_size(data)

    def train_collate(self, data: Mapping[str, Any]) -> Collate:
        return collate_utterances

    def eval_batches(self, stage: str, split: SplitIndices, data: Mapping[str, Any]) -> tuple[list[list[int]], Collate]:
        batches = grouped_batches(split.stage(stage), self.group_size(data), self.groups_per_batch(data), data, stage)
        return batches, collate_utterances
