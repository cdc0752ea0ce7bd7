"""Speaker embeddings of a corpus split: compute, save (``embeddings.npz``), load, and summarise.

Used by ``python -m lightning_tts embed``, ``EmbeddingProjectionCallback`` and
``notebooks/embedding_plots.ipynb``. The embeddings come from a checkpoint's speaker encoder, or from
the pretrained ``resemblyzer`` judge (``evaluation.judges``) on the recordings. The utterances of
each speaker are taken in sorted id order, at most ``per_speaker`` of them, so the same checkpoint
and split always give the same set.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from lightning_tts.atomic import atomic_path, require_parent
from lightning_tts.audio import FeatureParams, read_audio
from lightning_tts.data.corpora import Utterance
from lightning_tts.data.datamodule import SpeakerTaskDataModule, build_datamodule
from lightning_tts.data.plans import UtteranceBatches
from lightning_tts.data.tasks import collate_utterances
from lightning_tts.devices import resolve_device
from lightning_tts.errors import ConfigError, DataError, LightningTTSError
from lightning_tts.evaluation.judges import RESEMBLYZER, Embedder, build_judge, judge_kind
from lightning_tts.learners import load_learner
from lightning_tts.learners.base import BaseLearner
from lightning_tts.learners.capabilities import SpeakerEncoding
from lightning_tts.metrics import verification_scores
from lightning_tts.plots import PROJECTIONS, project_embeddings, save_figure, speaker_map_figure

SPLITS = ("train", "val", "test", "heldout")


@dataclass
class EmbeddingSet:
    """Embeddings of utterances.

    Attributes:
        vectors: (N, D) unit-length embeddings.
        speakers: speaker per row.
        utterance_ids: utterance id per row.
    """

    vectors: np.ndarray
    speakers: list[str]
    utterance_ids: list[str]

    def save(self, path: str | Path) -> Path:
        """Write ``vectors``, ``speakers`` and ``utterance_ids`` as a compressed npz, atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, vectors=self.vectors.astype(np.float32), speakers=np.asarray(self.speakers),
                                    utterance_ids=np.asarray(self.utterance_ids))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "EmbeddingSet":
        """Read a file written by ``save``.

        Raises:
            DataError: missing file or arrays.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"embeddings file not found: {path}")
        with np.load(path, allow_pickle=False) as data:
            missing = {"vectors", "speakers", "utterance_ids"} - set(data.files)
            if missing:
                raise DataError(f"{path} lacks arrays {sorted(missing)}: not written by 'embed'")
            return cls(data["vectors"], data["speakers"].tolist(), data["utterance_ids"].tolist())

    def centroids(self) -> tuple[list[str], np.ndarray]:
        """(sorted speaker names, (K, D) unit-length mean embedding per speaker)."""
        names = sorted(set(self.speakers))
        labels = np.asarray(self.speakers)
        means = np.stack([self.vectors[labels == n].mean(0) for n in names])
        return names, means / np.linalg.norm(means, axis=1, keepdims=True)

    def centroid_distances(self) -> tuple[list[str], np.ndarray]:
        """(names, (K, K) cosine distances 1 - cos between speaker centroids)."""
        names, c = self.centroids()
        return names, 1.0 - c @ c.T


def split_utterances(dm: SpeakerTaskDataModule, split: str, per_speaker: int) -> list[int]:
    """Dataset indices of ``split``'s speakers (``heldout``: training speakers' held-out utterances),
    at most ``per_speaker`` each in sorted utterance-id order.

    Raises:
        DataError: unknown split or one without utterances.
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    assert dm.split is not None
    utts = dm.index.utterances
    if split == "heldout":
        wanted = {u.utterance_id for u in utts} & dm.split.heldout
        speakers = set(dm.split.train)
    else:
        speakers = set(getattr(dm.split, split))
        wanted = None
    chosen: dict[str, list[int]] = {}
    for i in sorted(range(len(utts)), key=lambda i: utts[i].utterance_id):
        u = utts[i]
        if u.speaker in speakers and (wanted is None or u.utterance_id in wanted):
            chosen.setdefault(u.speaker, [])
            if len(chosen[u.speaker]) < per_speaker:
                chosen[u.speaker].append(i)
    indices = [i for s in sorted(chosen) for i in chosen[s]]
    if not indices:
        raise DataError(f"the {split} split has no utterances to embed")
    return indices


@torch.no_grad()
def embed_dataset(learner: BaseLearner, dm: SpeakerTaskDataModule, indices: Sequence[int],
                  batch_size: int = 16) -> EmbeddingSet:
    """Embed the dataset items ``indices`` with the learner's speaker encoder.

    Raises:
        LightningTTSError: the learner has no speaker encoder.
    """
    if not isinstance(learner, SpeakerEncoding):
        raise LightningTTSError(f"a {learner.name} checkpoint has no speaker encoder: embed needs a metric checkpoint")
    was_training = learner.training
    learner.eval()
    vectors, speakers, ids = [], [], []
    for start in range(0, len(indices), batch_size):
        batch = collate_utterances([dm.dataset[i] for i in indices[start: start + batch_size]]).to(learner.device)
        vectors.append(learner.embed_utterances(batch.mels, batch.mel_lengths).float().cpu())
        speakers += batch.speakers
        ids += batch.utterance_ids
    learner.train(was_training)
    return EmbeddingSet(torch.cat(vectors).numpy(), speakers, ids)


def embed_recordings(embed: Embedder, utterances: Sequence[Utterance], sample_rate: int) -> EmbeddingSet:
    """Embed the recordings of ``utterances``, read at ``sample_rate``, with a judge (``Embedder``)."""
    vectors = torch.stack([embed(read_audio(u.path, sample_rate)).float() for u in utterances])  # (N, D)
    return EmbeddingSet(vectors.numpy(), [u.speaker for u in utterances], [u.utterance_id for u in utterances])


def speaker_genders(dm: SpeakerTaskDataModule) -> dict[str, str]:
    """Speaker -> gender where the corpus metadata has it."""
    return {s: str(info["gender"]) for s, info in dm.index.speakers.items() if info.get("gender")}


@dataclass
class EmbedResult:
    """What ``embed_split`` wrote and measured.

    Attributes:
        embeddings: the embedded utterances.
        files: the written files (``embeddings.npz``, ``<method>.png``).
        eer: EER over every pair (None with one speaker).
        silhouette: cosine silhouette (None with one speaker).
    """

    embeddings: EmbeddingSet
    files: list[Path]
    eer: Optional[float]
    silhouette: Optional[float]

    @property
    def n_speakers(self) -> int:
        """Distinct speakers embedded."""
        return len(set(self.embeddings.speakers))


def embed_split(cfg: DictConfig, checkpoint: str | Path, out: str | Path, split: str = "test", per_speaker: int = 20,
                method: str = "umap", device: str | torch.device = "cpu", progress: bool = True) -> EmbedResult:
    """Embed a split's utterances with a checkpoint's speaker encoder, or with the pretrained judge
    when ``checkpoint`` is ``resemblyzer``; write ``embeddings.npz`` and a 2-D speaker map
    ``<method>.png`` into ``out`` (created; its parent must exist).

    Raises:
        ConfigError: unknown projection method or ``per_speaker`` < 1.
        LightningTTSError / DataError: a checkpoint without a speaker encoder, other features, a bad split,
            resemblyzer not installed.
    """
    if method not in PROJECTIONS:
        raise ConfigError(f"--method must be one of {', '.join(PROJECTIONS)}, got {method!r}")
    if per_speaker < 1:
        raise ConfigError(f"--per-speaker must be >= 1, got {per_speaker}")
    out = require_parent(out, "create")
    if judge_kind(str(checkpoint)) == RESEMBLYZER:
        embed = build_judge(RESEMBLYZER, cfg.features.sample_rate)
        assert embed is not None
        dm = build_datamodule(cfg, UtteranceBatches(), progress=progress)
        utterances = [dm.index.utterances[i] for i in split_utterances(dm, split, per_speaker)]
        embeddings = embed_recordings(embed, utterances, cfg.features.sample_rate)
    else:
        learner = load_learner(checkpoint).to(resolve_device(device))
        learner.check_features(FeatureParams.from_config(cfg.features))
        dm = build_datamodule(cfg, learner.batches, progress=progress)
        embeddings = embed_dataset(learner, dm, split_utterances(dm, split, per_speaker))
    out.mkdir(exist_ok=True)
    files = [embeddings.save(out / "embeddings.npz"), out / f"{method}.png"]
    points = project_embeddings(embeddings.vectors, method, cfg.seed)
    n_speakers = len(set(embeddings.speakers))
    save_figure(speaker_map_figure(points, embeddings.speakers, speaker_genders(dm),
                                   title=f"{method.upper()}: {n_speakers} {split} speakers"), files[1])
    scores = verification_scores(embeddings.vectors, np.asarray(embeddings.speakers)) if n_speakers > 1 else (None, None)
    return EmbedResult(embeddings, files, *scores)
