"""``SpeakerTaskDataModule``: one LightningDataModule for every learner, and the ``data`` config section.

It owns every data decision: speaker-disjoint train/val/test splits and the utterances held out from
training speakers. What a batch is comes from the learner's ``BatchPlan`` (``data/plans.py``).
Validation and test batches are fixed (a function of the data config and split seed), so every
model compared on a corpus sees the same tasks.
"""
from __future__ import annotations

import logging
import signal
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from lightning_tts.audio import FeatureParams
from lightning_tts.data.cache import FeatureCache, prepare
from lightning_tts.data.corpora import CorpusIndex, Utterance
from lightning_tts.data.plans import BatchPlan, SplitIndices
from lightning_tts.data.espeak import EspeakConfig
from lightning_tts.data.synthetic import SyntheticConfig
from lightning_tts.data.tasks import FixedBatchSampler, TaskConfig, group_by_speaker
from lightning_tts.errors import DataError
from lightning_tts.paths import resolve_path
from lightning_tts.text import TextProcessor

log = logging.getLogger(__name__)


#: Signals a training process turns into a checkpoint and a clean stop, or a requeue (``callbacks/signals.py``).
#: A terminal's Ctrl-C, SLURM and ``kill -- -PGID`` send them to every process of the group, DataLoader
#: workers included, whose default action would end them mid-batch.
WORKER_IGNORED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


def ignore_stop_signals(worker_id: int) -> None:
    """``worker_init_fn`` of every loader with workers: a worker ignores ``WORKER_IGNORED_SIGNALS``, so a
    signal to the whole process group reaches the training process alone, which saves its step and then
    shuts the workers down (they also exit by themselves if it dies: PyTorch's worker watchdog)."""
    for signum in WORKER_IGNORED_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


@dataclass
class SplitConfig:
    """Speaker-disjoint train/val/test splits (``data.splits``): a split file, explicit lists, or counts.

    Attributes:
        val: validation speakers drawn when no file or list is given.
        test: test speakers drawn likewise.
        val_speakers: explicit validation speakers.
        test_speakers: explicit test speakers.
        file: a split file (``val``/``test`` lists and/or ``val_subsets``/``test_subsets``).
        seed: seed of the drawn split, the held-out utterances and the fixed evaluation batches.
        heldout_utterances: utterances per training speaker kept out of training (validation).
    """

    val: int = 4
    test: int = 4
    val_speakers: List[str] = field(default_factory=list)
    test_speakers: List[str] = field(default_factory=list)
    file: Optional[str] = None
    seed: int = 0
    heldout_utterances: int = 2


@dataclass
class DataConfig:
    """Where the corpus lives, how it is read, cached, split and batched (the ``data`` section).

    Attributes:
        corpus: a reader of ``data/corpora.py`` (vctk, libritts, ljspeech, manifest) or a corpus the
            package builds at ``root`` when missing (synthetic, espeak).
        root: the corpus root (the manifest file for ``manifest``).
        cache_dir: where feature caches go.
        mic: VCTK 0.92 microphone (mic1 or mic2).
        subsets: LibriTTS subsets read.
        min_duration: shorter clips are skipped (seconds).
        max_duration: longer clips are skipped (seconds).
        preprocess_workers: feature-extraction processes.
        num_workers: DataLoader workers.
        batch_size: utterances per batch of ``UtteranceBatches``.
        speakers_per_batch: N of ``SpeakerBatches``.
        utterances_per_speaker: M of ``SpeakerBatches``.
    """

    corpus: str = "synthetic"
    root: Optional[str] = "artifacts/synthetic"
    cache_dir: str = "artifacts/cache"
    mic: str = "mic1"
    subsets: List[str] = field(default_factory=lambda: ["train-clean-100"])
    min_duration: float = 0.3
    max_duration: float = 20.0
    preprocess_workers: int = 2
    num_workers: int = 0
    batch_size: int = 16
    speakers_per_batch: int = 8
    utterances_per_speaker: int = 4
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    espeak: EspeakConfig = field(default_factory=EspeakConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)


@dataclass
class SpeakerSplit:
    """Speaker-disjoint split; ``heldout`` are training-speaker utterance ids kept out of training."""

    train: list[str]
    val: list[str]
    test: list[str]
    heldout: set[str]


def _corpus(index: CorpusIndex) -> str:
    """'the <name> corpus at <root>' for messages."""
    return f"the {index.name} corpus at {index.root}"


def _matches_nothing(stage: str, source: str, listed: Sequence[str], index: CorpusIndex) -> DataError:
    """The one-line error for a split whose listed speakers are all absent from the corpus reading."""
    return DataError(f"{source} names {len(listed)} {stage} speakers and none is in {_corpus(index)} "
                     f"(e.g. {sorted(listed)[:3]}): set data.splits.file=null and draw them by count "
                     f"(data.splits.val=N data.splits.test=N), or name this corpus's speakers with "
                     f"data.splits.{stage}_speakers=[...]")


def _split_file(path: Path, index: CorpusIndex, present: set[str]) -> tuple[list[str], list[str]]:
    """(val, test) speakers from a split file: ``val``/``test`` lists and/or ``val_subsets``/``test_subsets``.

    Raises:
        DataError: a missing file, unknown keys, or a stage whose listed speakers are all absent.
    """
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
        found = sorted({s for s in names if s in present})
        if names and not found:
            raise _matches_nothing(stage, f"data.splits.file {path}", names, index)
        absent = [s for s in names if s not in present]
        if absent:
            rank_zero_warn(f"{len(absent)} {stage} speakers of {path} are not in this corpus reading (e.g. {absent[:3]})")
        out.append(found)
    return out[0], out[1]


def split_speakers(index: CorpusIndex, splits: Mapping[str, Any]) -> SpeakerSplit:
    """Split the corpus's speakers by split file, explicit lists, or counts (in that order).

    Args:
        index: the corpus index.
        splits: the ``data.splits`` config section.

    Raises:
        DataError: a split that matches no speaker of the corpus reading (naming the split, the
            corpus and the fixes), unknown speakers in explicit lists, counts that leave no training
            speaker, or an unreadable split file.
    """
    utts = group_by_speaker([u.speaker for u in index.utterances])
    speakers = sorted(utts)
    if splits["file"]:
        val, test = _split_file(resolve_path(splits["file"]), index, set(utts))
    elif splits["val_speakers"] or splits["test_speakers"]:
        val, test = list(splits["val_speakers"]), list(splits["test_speakers"])
        for stage, listed in (("val", val), ("test", test)):
            unknown = [s for s in listed if s not in utts]
            if listed and len(unknown) == len(listed):
                raise _matches_nothing(stage, f"data.splits.{stage}_speakers", listed, index)
            if unknown:
                raise DataError(f"data.splits.{stage}_speakers lists speakers not in {_corpus(index)}: {unknown[:5]}")
    else:
        n_val, n_test = splits["val"], splits["test"]
        if n_val + n_test >= len(speakers):
            raise DataError(f"data.splits.val={n_val} + test={n_test} leaves no training speaker in {_corpus(index)} "
                            f"({len(speakers)} speakers): lower data.splits.val/test, or name fewer speakers with "
                            f"data.splits.val_speakers/test_speakers=[...]")
        order = [speakers[i] for i in np.random.default_rng(splits["seed"]).permutation(len(speakers))]
        test, val = order[:n_test], order[n_test: n_test + n_val]
    if set(val) & set(test):
        raise DataError(f"speakers in both val and test splits: {sorted(set(val) & set(test))[:5]}")
    train = [s for s in speakers if s not in set(val) | set(test)]
    if not train:
        source = f"data.splits.file {splits['file']}" if splits["file"] else "data.splits.val_speakers/test_speakers"
        raise DataError(f"the train split matches no speaker: {source} puts all {len(speakers)} speakers of "
                        f"{_corpus(index)} in val or test: list fewer speakers there, or set data.splits.file=null "
                        f"and draw val/test by count (data.splits.val=N data.splits.test=N)")
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
    """Corpus -> features -> speaker-disjoint splits -> the batches of a learner's plan.

    Args:
        data: the schema-checked ``data`` config section (``DataConfig``).
        features: acoustic feature parameters.
        plan: what batches the learner needs (``data/plans.py``).
        phonemes: CMUdict phonemes (else letters) for text.
        seed: base seed of the training samplers (validation/test use ``data.splits.seed``).
        progress: progress bars while preprocessing.
    """

    def __init__(self, data: Mapping[str, Any], features: FeatureParams, plan: BatchPlan, phonemes: bool = True,
                 seed: int = 0, progress: bool = True) -> None:
        super().__init__()
        self.data = data
        self.features = features
        self.plan = plan
        self.text = TextProcessor(phonemes=phonemes)
        self.seed = seed
        self.progress = progress
        self.cache: Optional[FeatureCache] = None
        self.index: Optional[CorpusIndex] = None
        self.split: Optional[SpeakerSplit] = None
        self.indices: Optional[SplitIndices] = None
        self.speaker_table: dict[str, int] = {}
        self.dataset: Optional[FeatureDataset] = None

    def prepare_data(self) -> None:
        """Build a generated corpus if needed and cache features (local rank 0 only)."""
        prepare(self.data, self.features, phonemes=self.text.phonemes, progress=self.progress)

    def setup(self, stage: Optional[str] = None) -> None:
        """Load the index, split speakers, and build the dataset (every rank)."""
        if self.dataset is not None:
            return
        self.cache, self.index = prepare(self.data, self.features, phonemes=self.text.phonemes, progress=False)
        self.split = split_speakers(self.index, self.data["splits"])
        self.speaker_table = {s: i for i, s in enumerate(self.split.train)}
        self.dataset = FeatureDataset(self.index.utterances, self.cache, self.text, self.speaker_table)
        utts = self.index.utterances
        by_speaker = group_by_speaker([u.speaker for u in utts])
        held = self.split.heldout
        self.indices = SplitIndices(
            train={s: [i for i in by_speaker[s] if utts[i].utterance_id not in held] for s in self.split.train},
            heldout=[i for s in self.split.train for i in by_speaker[s] if utts[i].utterance_id in held],
            val={s: by_speaker[s] for s in self.split.val}, test={s: by_speaker[s] for s in self.split.test},
            durations=[u.duration for u in utts])

    def _rank(self) -> tuple[int, int]:
        """(global rank, world size) of the attached trainer, else (0, 1)."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, sampler: Any, collate: Callable) -> DataLoader:
        """A loader whose sampler yields whole batches of indices (workers: see ``ignore_stop_signals``)."""
        workers = self.data["num_workers"]
        return DataLoader(_BatchDataset(self.dataset), batch_size=None, sampler=sampler, collate_fn=collate,
                          num_workers=workers, persistent_workers=workers > 0,
                          worker_init_fn=ignore_stop_signals if workers > 0 else None)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        sampler = self.plan.train_sampler(self.indices, self.data, self.seed, rank, world)
        return self._loader(sampler, self.plan.train_collate(self.data))

    def _eval_loader(self, stage: str) -> list[DataLoader] | DataLoader:
        batches, collate = self.plan.eval_batches(stage, self.indices, self.data)
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
        assert self.split is not None and self.indices is not None
        n_train = sum(len(v) for v in self.indices.train.values())
        return (f"speakers train/val/test = {len(self.split.train)}/{len(self.split.val)}/{len(self.split.test)}; "
                f"{n_train} training utterances, {len(self.indices.heldout)} held out")


def build_datamodule(cfg: DictConfig, plan: BatchPlan, progress: bool = True) -> SpeakerTaskDataModule:
    """The data module of a run configuration for a batch plan, prepared and set up."""
    dm = SpeakerTaskDataModule(cfg.data, FeatureParams.from_config(cfg.features), plan, phonemes=cfg.text.phonemes,
                               seed=cfg.seed, progress=progress)
    dm.prepare_data()
    dm.setup("fit")
    return dm
