"""Speaker embeddings of a corpus split: compute, save (``embeddings.npz``), load, and summarise.

Used by ``python -m lightning_tts embed``, ``EmbeddingProjectionCallback`` and
``notebooks/embedding_plots.ipynb``. The utterances of each speaker are taken in sorted id order,
at most ``per_speaker`` of them, so the same checkpoint and split always give the same set.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lightning_tts.atomic import atomic_path
from lightning_tts.data.datamodule import SpeakerTaskDataModule
from lightning_tts.data.tasks import collate_utterances
from lightning_tts.errors import DataError, LightningTTSError
from lightning_tts.learners.base import BaseLearner

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
    if not learner.has_speaker_encoder:
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


def speaker_genders(dm: SpeakerTaskDataModule) -> dict[str, str]:
    """Speaker -> gender where the corpus metadata has it."""
    return {s: str(info["gender"]) for s, info in dm.index.speakers.items() if info.get("gender")}
