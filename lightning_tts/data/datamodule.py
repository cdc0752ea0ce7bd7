"""``SpeakerTaskDataModule``: one LightningDataModule for every learner.

It owns every data decision: speaker-disjoint train/val/test splits, the utterances held out from
training speakers, and what a batch is in each mode:

- ``episodic``: ``TaskBatch`` of T tasks (K support + Q query utterances of one speaker each);
- ``utterance``: ``UtteranceBatch`` of training-speaker utterances (the multi-speaker baseline);
- ``speakers``: ``UtteranceBatch`` of N speakers x M utterances (metric learning).

Validation and test batches are fixed (a function of the data config and split seed), so every
model compared on a corpus sees the same tasks.
"""
from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from lightning_tts.audio import FeatureParams
from lightning_tts.config import resolve_path
from lightning_tts.data.cache import FeatureCache, prepare
from lightning_tts.data.corpora import CorpusIndex, Utterance
from lightning_tts.data.tasks import (
    FixedBatchSampler,
    SpeakerGroupSampler,
    TaskCollator,
    UtteranceBatchSampler,
    collate_utterances,
    fixed_groups,
    group_by_speaker,
)
from lightning_tts.errors import DataError
from lightning_tts.text import TextProcessor

log = logging.getLogger(__name__)
MODES = ("episodic", "utterance", "speakers")


@dataclass
class SpeakerSplit:
    """Speaker-disjoint split; ``heldout`` are training-speaker utterance ids kept out of training."""

    train: list[str]
    val: list[str]
    test: list[str]
    heldout: set[str]


def _split_file(path: Path, index: CorpusIndex, present: set[str]) -> tuple[list[str], list[str]]:
    """(val, test) speakers from a split file: ``val``/``test`` lists and/or ``val_subsets``/``test_subsets``."""
    if not path.is_file():
        raise DataError(f"data.splits.file not found: {path}")
    listed = OmegaConf.to_container(OmegaConf.load(path))
    unknown = set(listed) - {"val", "test", "val_subsets", "test_subsets"}
    if unknown:
        raise DataError(f"{path}: unknown keys {sorted(unknown)} (use val, test, val_subsets, test_subsets)")
    out = []
    for stage in ("val", "test"):
        names = [str(s) for s in listed.get(stage, [])]
        subsets = set(listed.get(f"{stage}_subsets", []))
        names += [s for s, info in index.speakers.items() if info.get("subset") in subsets]
        absent = [s for s in names if s not in present]
        if absent:
            rank_zero_warn(f"{len(absent)} {stage} speakers of {path} are not in this corpus reading (e.g. {absent[:3]})")
        out.append(sorted({s for s in names if s in present}))
    return out[0], out[1]


def split_speakers(index: CorpusIndex, splits: Mapping[str, Any]) -> SpeakerSplit:
    """Split the corpus's speakers by split file, explicit lists, or counts (in that order).

    Args:
        index: the corpus index.
        splits: the ``data.splits`` config section.

    Raises:
        DataError: unknown speakers in explicit lists, counts that leave no training speaker,
            or an unreadable split file.
    """
    utts = group_by_speaker([u.speaker for u in index.utterances])
    speakers = sorted(utts)
    if splits["file"]:
        val, test = _split_file(resolve_path(splits["file"]), index, set(utts))
    elif splits["val_speakers"] or splits["test_speakers"]:
        val, test = list(splits["val_speakers"]), list(splits["test_speakers"])
        unknown = [s for s in val + test if s not in utts]
        if unknown:
            raise DataError(f"data.splits lists speakers not in the corpus: {unknown[:5]}")
    else:
        n_val, n_test = splits["val"], splits["test"]
        if n_val + n_test >= len(speakers):
            raise DataError(f"data.splits.val={n_val} + test={n_test} leaves no training speaker "
                            f"(corpus has {len(speakers)})")
        order = [speakers[i] for i in np.random.default_rng(splits["seed"]).permutation(len(speakers))]
        test, val = order[:n_test], order[n_test: n_test + n_val]
    if set(val) & set(test):
        raise DataError(f"speakers in both val and test splits: {sorted(set(val) & set(test))[:5]}")
    train = [s for s in speakers if s not in set(val) | set(test)]
    if not train:
        raise DataError("the speaker split leaves no training speaker")
    heldout: set[str] = set()
    n_hold = splits["heldout_utterances"]
    for speaker in train:
        ids = [index.utterances[i].utterance_id for i in utts[speaker]]
        if n_hold and len(ids) > n_hold + 1:
            rng = np.random.default_rng([splits["seed"], zlib.crc32(speaker.encode())])
            heldout.update(ids[i] for i in rng.permutation(len(ids))[:n_hold])
    return SpeakerSplit(train, sorted(val), sorted(test), heldout)


class FeatureDataset(Dataset):
    """Cached features + token ids of a list of utterances.

    Each item: ``tokens`` (L,), ``mel`` (T, n_mels), optional ``pitch``/``energy`` (T,),
    ``speaker_id`` (int, -1 outside the training table), ``speaker``, ``utterance_id``.
    """

    def __init__(self, utterances: Sequence[Utterance], cache: FeatureCache, text: TextProcessor,
                 speaker_table: Mapping[str, int]) -> None:
        self.utterances = list(utterances)
        self.cache, self.text, self.speaker_table = cache, text, speaker_table

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, i: int) -> dict[str, Any]:
        utt = self.utterances[i]
        item: dict[str, Any] = dict(self.cache.load(utt))
        item["tokens"] = torch.tensor(self.text.encode(utt.text), dtype=torch.long)
        item["speaker_id"] = self.speaker_table.get(utt.speaker, -1)
        item["speaker"], item["utterance_id"] = utt.speaker, utt.utterance_id
        return item


class _BatchDataset(Dataset):
    """Indexable by a list of indices: lets a batch sampler be the loader's ``sampler``."""

    def __init__(self, dataset: FeatureDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]) -> list[dict[str, Any]]:
        return [self.dataset[i] for i in indices]


class SpeakerTaskDataModule(pl.LightningDataModule):
    """Corpus -> features -> speaker-disjoint splits -> batches for every learner.

    Args:
        data: the schema-checked ``data`` config section (``lightning_tts.config.DataConfig``).
        features: acoustic feature parameters.
        phonemes: CMUdict phonemes (else letters) for text.
        mode: ``episodic``, ``utterance`` or ``speakers`` (see module docstring).
        seed: base seed of the training samplers (validation/test use ``data.splits.seed``).
        progress: progress bars while preprocessing.
    """

    def __init__(self, data: Mapping[str, Any], features: FeatureParams, phonemes: bool = True,
                 mode: str = "episodic", seed: int = 0, progress: bool = True) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.data = data
        self.features = features
        self.text = TextProcessor(phonemes=phonemes)
        self.mode = mode
        self.seed = seed
        self.progress = progress
        self.tasks = data["tasks"]
        self.cache: Optional[FeatureCache] = None
        self.index: Optional[CorpusIndex] = None
        self.split: Optional[SpeakerSplit] = None
        self.speaker_table: dict[str, int] = {}
        self.dataset: Optional[FeatureDataset] = None

    def prepare_data(self) -> None:
        """Build the synthetic corpus if needed and cache features (local rank 0 only)."""
        prepare(self.data, self.features, phonemes=self.text.phonemes, progress=self.progress)

    def setup(self, stage: Optional[str] = None) -> None:
        """Load the index, split speakers, and build the dataset (every rank)."""
        if self.dataset is not None:
            return
        self.cache, self.index = prepare(self.data, self.features, phonemes=self.text.phonemes, progress=False)
        self.split = split_speakers(self.index, self.data["splits"])
        self.speaker_table = {s: i for i, s in enumerate(self.split.train)}
        self.dataset = FeatureDataset(self.index.utterances, self.cache, self.text, self.speaker_table)
        by_speaker = group_by_speaker([u.speaker for u in self.index.utterances])
        held = self.split.heldout
        self._train = {s: [i for i in by_speaker[s] if self.index.utterances[i].utterance_id not in held]
                       for s in self.split.train}
        self._heldout = [i for s in self.split.train for i in by_speaker[s] if self.index.utterances[i].utterance_id in held]
        self._val = {s: by_speaker[s] for s in self.split.val}
        self._test = {s: by_speaker[s] for s in self.split.test}

    @property
    def group_size(self) -> int:
        """Utterances per speaker group: K+Q in episodic mode, M in speakers mode."""
        if self.mode == "episodic":
            return self.tasks["shots"] + self.tasks["queries"]
        return self.data["utterances_per_speaker"]

    @property
    def groups_per_batch(self) -> int:
        """Speaker groups per batch: T tasks, or N speakers."""
        return self.tasks["tasks_per_batch"] if self.mode == "episodic" else self.data["speakers_per_batch"]

    def _rank(self) -> tuple[int, int]:
        """(global rank, world size) of the attached trainer, else (0, 1)."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, sampler: Any, collate: Callable) -> DataLoader:
        """A loader whose sampler yields whole batches of indices."""
        workers = self.data["num_workers"]
        return DataLoader(_BatchDataset(self.dataset), batch_size=None, sampler=sampler, collate_fn=collate,
                          num_workers=workers, persistent_workers=workers > 0)

    def _collate(self) -> Callable:
        return TaskCollator(self.tasks["shots"], self.tasks["queries"]) if self.mode == "episodic" else collate_utterances

    def _eligible(self, speakers: dict[str, list[int]], stage: str) -> dict[str, list[int]]:
        """Speakers with at least ``group_size`` utterances; warns about the others."""
        short = sorted(s for s, idx in speakers.items() if len(idx) < self.group_size)
        if short:
            rank_zero_warn(f"{stage}: {len(short)} speakers have fewer than {self.group_size} utterances and are "
                           f"excluded from {self.mode} batches (e.g. {short[:3]})")
        return {s: idx for s, idx in speakers.items() if s not in set(short)}

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        if self.mode == "utterance":
            indices = [i for idx in self._train.values() for i in idx]
            lengths = [self.index.utterances[i].duration for i in indices]
            sampler = UtteranceBatchSampler(indices, lengths, self.data["batch_size"], self.seed, rank, world)
        else:
            speakers = self._eligible(self._train, "train")
            if not speakers:
                raise DataError(f"no training speaker has {self.group_size} utterances "
                                f"(data.tasks.shots + data.tasks.queries, or data.utterances_per_speaker)")
            n_utts = sum(len(v) for v in speakers.values())
            per_step = self.groups_per_batch * world
            n_groups = self.tasks["tasks_per_epoch"] if self.mode == "episodic" else n_utts // self.group_size
            sampler = SpeakerGroupSampler(speakers, self.group_size, self.groups_per_batch,
                                          max(1, n_groups // per_step), self.seed, rank, world)
        return self._loader(sampler, self._collate())

    def fixed_batches(self, stage: str) -> tuple[list[list[int]], Callable]:
        """The fixed evaluation batches (dataset indices) of ``stage`` and their collate function.

        - ``val`` in utterance mode: held-out utterances of training speakers, by length;
        - speakers mode: N x M groups of the stage's speakers;
        - otherwise: T few-shot tasks (K + Q) per batch over the stage's speakers.
        """
        if stage == "val" and self.mode == "utterance":
            order = sorted(self._heldout, key=lambda i: self.index.utterances[i].duration)
            size = self.data["batch_size"]
            return [order[i: i + size] for i in range(0, len(order), size)], collate_utterances
        speakers = self._val if stage == "val" else self._test
        if self.mode == "speakers":
            group, per, collate = self.group_size, self.groups_per_batch, collate_utterances
        else:
            group, per = self.tasks["shots"] + self.tasks["queries"], self.tasks["tasks_per_batch"]
            collate = TaskCollator(self.tasks["shots"], self.tasks["queries"])
        eligible = {s: idx for s, idx in speakers.items() if len(idx) >= group}
        if len(eligible) < len(speakers):
            rank_zero_warn(f"{stage}: {len(speakers) - len(eligible)} speakers have fewer than {group} utterances "
                           f"and are left out of the fixed {stage} batches")
        groups = fixed_groups(eligible, group, self.tasks["val_tasks_per_speaker"], self.data["splits"]["seed"])
        return [[i for g in groups[k: k + per] for i in g] for k in range(0, len(groups), per)], collate

    def _eval_loader(self, stage: str) -> list[DataLoader] | DataLoader:
        batches, collate = self.fixed_batches(stage)
        if not batches:
            rank_zero_warn(f"no {stage} batches: the {stage} split is empty or its speakers have too few utterances")
            return []
        rank, world = self._rank()
        return self._loader(FixedBatchSampler(batches, rank, world), collate)

    def val_dataloader(self) -> list[DataLoader] | DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> list[DataLoader] | DataLoader:
        return self._eval_loader("test")

    def describe(self) -> str:
        """One line: speakers per split and utterance counts."""
        assert self.split is not None
        n_train = sum(len(v) for v in self._train.values())
        return (f"speakers train/val/test = {len(self.split.train)}/{len(self.split.val)}/{len(self.split.test)}; "
                f"{n_train} training utterances, {len(self._heldout)} held out")
