"""The one scoring function: every metric of a (recording, synthesis) pair. ``evaluate`` and the
few-shot callback both score through ``score_pair``, so their numbers are the same numbers.

Adding a metric: a function in ``metrics.py``, its name in ``METRICS`` and ``LOWER_IS_BETTER``, and
its value in ``score_pair``.
"""
from __future__ import annotations

from typing import Callable, Collection, Optional

import torch

from lightning_tts.evaluation.judges import Embedder
from lightning_tts.evaluation.recognizer import Transcriber
from lightning_tts.metrics import (char_error_rate, cosine_similarity, f0_errors, mcd_from_mcep, mel_cepstrum,
                                   pesq_score, stoi_score, word_error_rate)

METRICS = ("mcd", "pesq", "stoi", "f0_rmse", "vuv_error", "speaker_sim", "wer", "cer")
LOWER_IS_BETTER = {"mcd": True, "pesq": False, "stoi": False, "f0_rmse": True, "vuv_error": True, "speaker_sim": False,
                   "wer": True, "cer": True}
Similarity = Callable[[torch.Tensor], float]  # synthesis waveform -> its speaker similarity to the recording


def metric_names(judged: bool, transcribed: bool = False, only: Optional[Collection[str]] = None) -> list[str]:
    """The metrics ``score_pair`` reports, in ``METRICS`` order; ``speaker_sim`` only with a judge,
    ``wer``/``cer`` only with a recogniser, and only those in ``only`` when it is given."""
    optional = {"speaker_sim": judged, "wer": transcribed, "cer": transcribed}
    return [m for m in METRICS if optional.get(m, True) and (only is None or m in only)]


def similarity_to(reference: torch.Tensor, embed: Embedder) -> Similarity:
    """Speaker similarity (cosine of judge embeddings) of a synthesis to the recording whose
    embedding is ``reference`` (D,)."""
    return lambda wav: float(cosine_similarity(reference, embed(wav)))


def score_pair(ref: torch.Tensor, syn: torch.Tensor, sample_rate: int, similarity: Optional[Similarity] = None,
               text: Optional[str] = None, transcribe: Optional[Transcriber] = None,
               only: Optional[Collection[str]] = None) -> dict[str, float]:
    """Every metric of one (recording, synthesis) pair of waveforms at ``sample_rate`` (``metric_names``
    order), or only those in ``only`` (the others are not computed: choosing a rate by MCD needs
    neither PESQ nor the judge).

    MCD-DTW on mel-cepstra; F0 RMSE and V/UV error along the same DTW path (mel-cepstra and path
    computed once); PESQ and STOI (NaN on failure); ``speaker_sim`` only with ``similarity``;
    ``wer`` and ``cer`` of the synthesis's transcript against ``text`` only with ``transcribe``.
    """
    wanted = metric_names(similarity is not None, transcribe is not None, only)
    want = set(wanted)
    scores: dict[str, float] = {}
    if {"mcd", "f0_rmse", "vuv_error"} & want:
        scores["mcd"], path = mcd_from_mcep(mel_cepstrum(ref.double().numpy(), sample_rate),
                                            mel_cepstrum(syn.double().numpy(), sample_rate))
        if {"f0_rmse", "vuv_error"} & want:
            scores["f0_rmse"], scores["vuv_error"] = f0_errors(ref, syn, sample_rate, path)
    if "pesq" in want:
        scores["pesq"] = pesq_score(ref, syn, sample_rate)
    if "stoi" in want:
        scores["stoi"] = stoi_score(ref, syn, sample_rate)
    if "speaker_sim" in want:
        assert similarity is not None
        scores["speaker_sim"] = similarity(syn)
    if {"wer", "cer"} & want:
        assert transcribe is not None
        if text is None:
            raise ValueError("score_pair: a recogniser needs the text the synthesis should say")
        heard = transcribe(syn)
        scores["wer"], scores["cer"] = word_error_rate(text, heard), char_error_rate(text, heard)
    return {m: scores[m] for m in wanted}
