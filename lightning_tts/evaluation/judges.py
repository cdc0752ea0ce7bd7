"""Judges of speaker similarity: waveform -> speaker embedding functions from models trained apart
from the models under test.

A judge is named by a spec (``fewshot.speaker_encoder``), read by ``build_judge``:

- ``resemblyzer`` (the default): the pretrained GE2E speaker encoder that ships inside the
  ``resemblyzer`` wheel (Apache-2.0), the judge Meta-TTS and YourTTS report speaker similarity
  (SECS) with. It embeds 16 kHz audio after its own ``preprocess_wav`` (volume normalisation and
  webrtcvad silence trimming).
- a path: a self-trained evaluation encoder checkpoint (a ``metric`` run, e.g. trained with
  ``conf/learner/speaker_encoder.yaml``).
- ``none`` or null: no judge, no ``speaker_sim``.
"""
from __future__ import annotations

import importlib.metadata
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from lightning_tts.atomic import file_sha256
from lightning_tts.audio import FeatureExtractor, resample
from lightning_tts.errors import LightningTTSError
from lightning_tts.learners import load_learner
from lightning_tts.learners.capabilities import SpeakerEncoding

Embedder = Callable[[torch.Tensor], torch.Tensor]  # waveform (N,) -> (D,) speaker embedding

RESEMBLYZER = "resemblyzer"  # the spec of the pretrained GE2E judge (the default)
NO_JUDGE = "none"  # the spec that turns speaker similarity off (as does null)
RESEMBLYZER_SAMPLE_RATE = 16000  # resemblyzer's hparams.sampling_rate
RESEMBLYZER_DIM = 256  # resemblyzer's hparams.model_embedding_size
MIN_VOICED_SECONDS = 0.1  # less voice than this left by the silence trimming: embed the untrimmed clip


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


def _resemblyzer() -> ModuleType:
    """The ``resemblyzer`` package (imported here: it imports librosa, slow to import).

    Raises:
        LightningTTSError: resemblyzer (or one of its dependencies) cannot be imported.
    """
    try:
        import resemblyzer
    except ImportError as err:
        raise LightningTTSError(f"the speaker-similarity judge resemblyzer is not importable ({err}): "
                                f"pip install resemblyzer, or set fewshot.speaker_encoder=none") from err
    return resemblyzer


@lru_cache(maxsize=1)
def _voice_encoder() -> Any:
    """One resemblyzer ``VoiceEncoder`` per process, on the CPU (its weights load from the wheel)."""
    return _resemblyzer().VoiceEncoder(device="cpu", verbose=False)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run torch's CPU operators with ``n`` intra-op threads inside the block; the process's setting
    is restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resemblyzer_embedder(sample_rate: int) -> Embedder:
    """The resemblyzer judge for waveforms at ``sample_rate``: (N,) waveform -> (256,) unit-length
    GE2E embedding, ``VoiceEncoder.embed_utterance(preprocess_wav(wav, source_sr=sample_rate))``.

    The waveform is clipped to [-1, 1] first (as writing it to a file would). Where the silence
    trimming of ``preprocess_wav`` leaves less than ``MIN_VOICED_SECONDS`` (no voice found), the
    untrimmed clip (resampled to 16 kHz, volume-normalised) is embedded instead, so an unvoiced
    synthesis still gets a (low) similarity. A clip with no signal at all (empty, all zeros or
    non-finite) has an all-NaN embedding: its similarity is NaN, counted as a failure.

    Raises:
        LightningTTSError: resemblyzer is not installed.
    """
    module = _resemblyzer()
    encoder = _voice_encoder()

    def embed(wav: torch.Tensor) -> torch.Tensor:
        audio = wav.detach().float().cpu().reshape(-1).numpy()  # (N,)
        if audio.size == 0 or not np.isfinite(audio).all() or not audio.any():
            return torch.full((RESEMBLYZER_DIM,), float("nan"))
        audio = np.clip(audio, -1.0, 1.0)
        voiced = module.preprocess_wav(audio, source_sr=sample_rate)  # (N16,) at 16 kHz, long silences cut
        if len(voiced) < MIN_VOICED_SECONDS * RESEMBLYZER_SAMPLE_RATE:
            import librosa  # resemblyzer's own resampler (a dependency of it)

            voiced = module.normalize_volume(librosa.resample(audio, orig_sr=sample_rate,
                                                              target_sr=RESEMBLYZER_SAMPLE_RATE),
                                             module.hparams.audio_norm_target_dBFS, increase_only=True)
        # a few 160-frame windows through a small LSTM: one thread is fastest, and far faster than
        # several on cores that are busy with training
        with _torch_threads(1):
            return torch.from_numpy(encoder.embed_utterance(voiced))  # (256,)

    return embed


def judge_kind(spec: Optional[str]) -> str:
    """What a judge spec (``fewshot.speaker_encoder``) names: ``"none"`` (null, empty or ``none``),
    ``"resemblyzer"`` or ``"checkpoint"`` (any other value: a path). Case and spaces are ignored."""
    name = "" if spec is None else str(spec).strip().lower()
    return NO_JUDGE if name in ("", NO_JUDGE) else RESEMBLYZER if name == RESEMBLYZER else "checkpoint"


def judge_checkpoint(spec: Optional[str]) -> Optional[Path]:
    """The evaluation encoder checkpoint a judge spec names; None for ``resemblyzer`` and no judge."""
    return Path(str(spec)) if judge_kind(spec) == "checkpoint" else None


def build_judge(spec: Optional[str], sample_rate: int) -> Optional[Embedder]:
    """The judge a spec names (``fewshot.speaker_encoder``), for waveforms at ``sample_rate``:
    ``resemblyzer``, a ``metric`` checkpoint path, or None for ``none``/null (no ``speaker_sim``).

    Raises:
        LightningTTSError: resemblyzer missing, a checkpoint not found or without a speaker encoder.
    """
    kind, checkpoint = judge_kind(spec), judge_checkpoint(spec)
    if kind == NO_JUDGE:
        return None
    if checkpoint is None:
        return resemblyzer_embedder(sample_rate)
    if not checkpoint.is_file():
        raise LightningTTSError(f"fewshot.speaker_encoder: checkpoint not found: {checkpoint} "
                                f"(a judge is {RESEMBLYZER}, {NO_JUDGE} or a metric checkpoint)")
    return speaker_embedder(checkpoint, sample_rate)


def judge_record(spec: Optional[str]) -> Optional[dict[str, str]]:
    """What a judge spec names, for results files: ``{"name": "resemblyzer", "version": ...}``,
    ``{"path": ..., "sha256": ...}`` for a checkpoint, or None for no judge."""
    kind, checkpoint = judge_kind(spec), judge_checkpoint(spec)
    if kind == NO_JUDGE:
        return None
    if checkpoint is None:
        return {"name": RESEMBLYZER, "version": importlib.metadata.version(RESEMBLYZER)}
    return {"path": str(checkpoint.resolve()), "sha256": file_sha256(checkpoint)}
