"""Fixed per-speaker support pools and query sets, and the support batches a learner adapts on."""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from lightning_tts.audio import FeatureExtractor
from lightning_tts.data.corpora import Utterance
from lightning_tts.data.tasks import UtteranceBatch, collate_utterances
from lightning_tts.errors import DataError
from lightning_tts.text import TextProcessor


@dataclass
class SpeakerSet:
    """A held-out speaker's fixed support pool and query set."""

    speaker: str
    support: list[Utterance]
    query: list[Utterance]


def fixed_speaker_sets(utterances: Sequence[Utterance], speakers: Sequence[str], pool: int, queries: int,
                       seed: int) -> list[SpeakerSet]:
    """Per speaker (sorted): a seeded permutation whose first ``queries`` items are the query set and the
    next ``pool`` the support pool, so the query set does not depend on how many shots are asked for.

    Raises:
        DataError: no speaker has ``pool + queries`` utterances.
    """
    by_speaker: dict[str, list[Utterance]] = {}
    for utt in utterances:
        by_speaker.setdefault(utt.speaker, []).append(utt)
    sets = []
    for speaker in sorted(speakers):
        utts = by_speaker.get(speaker, [])
        if len(utts) < pool + queries:
            continue
        order = np.random.default_rng([seed, zlib.crc32(speaker.encode())]).permutation(len(utts))
        chosen = [utts[i] for i in order]
        sets.append(SpeakerSet(speaker, support=chosen[queries: queries + pool], query=chosen[:queries]))
    if not sets:
        raise DataError(f"no test speaker has {pool} support + {queries} query utterances "
                        f"(lower --shots or data.tasks.queries)")
    return sets


def support_batch(utts: Sequence[Utterance], waves: Sequence[torch.Tensor], text: TextProcessor,
                  extractor: FeatureExtractor) -> UtteranceBatch:
    """A padded batch of utterances (features computed from their waveforms) for ``learner.adapt``."""
    items = [{"tokens": torch.tensor(text.encode(u.text)), "mel": extractor(wav)["mel"], "speaker_id": -1,
              "speaker": u.speaker, "utterance_id": u.utterance_id} for u, wav in zip(utts, waves)]
    return collate_utterances(items)
