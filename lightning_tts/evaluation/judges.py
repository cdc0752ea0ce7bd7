"""Judges of speaker similarity: waveform -> speaker embedding functions from models trained apart
from the models under test."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from lightning_tts.audio import FeatureExtractor, resample
from lightning_tts.errors import LightningTTSError
from lightning_tts.learners import load_learner
from lightning_tts.learners.capabilities import SpeakerEncoding

Embedder = Callable[[torch.Tensor], torch.Tensor]  # waveform (N,) -> (D,) speaker embedding


def speaker_embedder(checkpoint: str | Path, sample_rate: int) -> Embedder:
    """The speaker-embedding function of an evaluation encoder checkpoint (a ``metric`` run, e.g.
    trained with ``conf/learner/speaker_encoder.yaml``), for waveforms at ``sample_rate``.

    Raises:
        LightningTTSError: the checkpoint has no speaker encoder.
    """
    encoder = load_learner(checkpoint)
    if not isinstance(encoder, SpeakerEncoding):
        raise LightningTTSError(f"fewshot.speaker_encoder {checkpoint} is a {encoder.name} checkpoint; it must be a "
                                f"metric run (e.g. --config conf/learner/speaker_encoder.yaml)")
    extractor = FeatureExtractor(encoder.feature_params)
    own_rate = encoder.feature_params.sample_rate

    @torch.no_grad()
    def embed(wav: torch.Tensor) -> torch.Tensor:
        mel = extractor(resample(wav, sample_rate, own_rate))["mel"]  # (T, n_mels)
        return encoder.embed_utterances(mel[None], torch.tensor([len(mel)]))[0]

    return embed
