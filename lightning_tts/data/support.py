"""A new speaker's audio from files: a support set (audio + transcripts) for ``adapt``, or
reference recordings alone for ``synthesize --reference``.

A support set is either a directory of ``NAME.wav``/``NAME.flac`` with same-stem ``NAME.txt``
transcripts, or a manifest (CSV/JSONL with ``audio`` and ``text``). Unusable files are skipped with a
one-line reason each (missing transcript, unreadable, silent, too short, no pronounceable text);
other sample rates are resampled. Too few usable utterances is an error. References pass the same
audio checks, and any failing one is an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from lightning_tts.audio import AUDIO_SUFFIXES, FeatureExtractor, FeatureParams, read_audio
from lightning_tts.data.corpora import ManifestCorpus, SkipReport
from lightning_tts.data.tasks import UtteranceBatch, collate_utterances
from lightning_tts.errors import AudioError, DataError, TextError
from lightning_tts.text import TextProcessor

MIN_SECONDS = 0.3
SILENCE_PEAK = 1e-3


@dataclass
class SupportSet:
    """Usable support utterances as a padded batch, and what was skipped (path, reason)."""

    batch: UtteranceBatch
    paths: list[str]
    skipped: list[tuple[str, str]]


def audio_problem(wav: torch.Tensor, sample_rate: int) -> Optional[str]:
    """Why a waveform cannot serve as a speaker's evidence (too short, silent), or None."""
    if wav.numel() < MIN_SECONDS * sample_rate:
        return f"too short ({wav.numel() / sample_rate:.2f} s < {MIN_SECONDS} s)"
    if float(wav.abs().max()) < SILENCE_PEAK:
        return "silent (peak below -60 dBFS)"
    return None


def load_references(paths: Sequence[str | Path], params: FeatureParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mels of reference recordings at ``params``: (K, T, n_mels) padded, and (K,) lengths.

    Raises:
        DataError: a missing, unreadable, too short or silent file.
    """
    extractor = FeatureExtractor(params)
    mels = []
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"reference audio not found: {path}")
        try:
            wav = read_audio(path, params.sample_rate)
        except AudioError as err:
            raise DataError(f"cannot read reference audio: {err}") from err
        problem = audio_problem(wav, params.sample_rate)
        if problem is not None:
            raise DataError(f"reference audio {path} is {problem}")
        mels.append(extractor(wav)["mel"])
    return nn.utils.rnn.pad_sequence(mels, batch_first=True), torch.tensor([len(m) for m in mels])


def _candidates(directory: Optional[Path], manifest: Optional[Path]) -> list[tuple[Path, Optional[str]]]:
    """(audio path, transcript or None) pairs from a directory or a manifest."""
    if manifest is not None:
        corpus = ManifestCorpus(manifest, min_duration=0.0, max_duration=float("inf"))
        return [(path, text) for _, _, path, text, _ in corpus.candidates(SkipReport())]
    assert directory is not None
    if not directory.is_dir():
        raise DataError(f"support directory not found: {directory}")
    out = []
    for path in sorted(p for p in directory.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES):
        txt = path.with_suffix(".txt")
        out.append((path, txt.read_text(encoding="utf-8", errors="replace").strip() if txt.is_file() else None))
    return out


def load_support(params: FeatureParams, text: TextProcessor, directory: Optional[str | Path] = None,
                 manifest: Optional[str | Path] = None, shots: Optional[int] = None) -> SupportSet:
    """Read, check and featurise a support set.

    Args:
        params: the model's feature parameters (audio is resampled to its rate).
        text: the model's text processor.
        directory: folder of audio + same-stem .txt files.
        manifest: CSV/JSONL manifest instead of a folder.
        shots: use the first K usable utterances (sorted by file name); all when None.

    Raises:
        DataError: no input, or fewer usable utterances than ``shots`` (or none).
    """
    if (directory is None) == (manifest is None):
        raise DataError("give exactly one of a support directory or a manifest")
    if shots is not None and shots < 1:
        raise DataError(f"--shots must be >= 1, got {shots}")
    extractor = FeatureExtractor(params)
    items, paths, skipped = [], [], []
    candidates = _candidates(Path(directory) if directory else None, Path(manifest) if manifest else None)
    for path, transcript in candidates:
        if shots is not None and len(items) == shots:
            break
        reason = None
        if transcript is None or not transcript.strip():
            reason = f"no transcript ({path.with_suffix('.txt').name} missing or empty)"
        else:
            try:
                wav = read_audio(path, params.sample_rate)
                tokens = text.encode(transcript)
            except (AudioError, TextError) as err:
                reason = str(err)
            else:
                reason = audio_problem(wav, params.sample_rate)
        if reason is not None:
            skipped.append((str(path), reason))
            continue
        items.append({"tokens": torch.tensor(tokens), "mel": extractor(wav)["mel"], "speaker_id": -1,
                      "speaker": "new", "utterance_id": path.stem})
        paths.append(str(path))
    need = shots or 1
    if len(items) < need:
        where = directory or manifest
        detail = "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:5])
        raise DataError(f"support set {where} has {len(items)} usable utterances, {need} needed"
                        + (f" (skipped {len(skipped)}: {detail})" if skipped else f" ({len(candidates)} audio files found)"))
    return SupportSet(collate_utterances(items), paths, skipped)
