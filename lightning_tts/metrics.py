"""Evaluation metrics: pure functions, and torchmetrics ``Metric`` classes that sync under DDP.

- **MCD** (mel-cepstral distortion, dB). Each signal is framed (Hamming window ``n_fft``, hop
  ``hop``, no centring, as ESPnet's ``evaluate_mcd.py``); a frame's mel-cepstrum is the real
  cepstrum of its log power spectrum (c0 halved), warped to ``order`` coefficients by the all-pass
  transform of SPTK's ``freqt``: exactly SPTK's ``mcep`` with ``maxiter=0`` (and ``pysptk.sp2mc``
  of the periodogram), the scale of SPTK's converged ``mcep`` that ESPnet and pymcd report in. Order and α are set by sample rate as in ESPnet (16 kHz: 23, 0.42;
  22.05 kHz: 34, 0.45; 24 kHz: 34, 0.46; 44.1 kHz: 39, 0.53; 48 kHz: 39, 0.55). Frames are aligned
  by DTW on c1..cM (exact DP, Euclidean frame cost), and
  ``MCD = mean over aligned frames of 10/ln10 * sqrt(2 * sum_d (c_d - c'_d)^2)``, over c1..cM
  (c0, the energy, excluded by default; ``include_c0=True`` keeps it). ``dtw=False`` compares
  frame i with frame i over the common length (plain MCD).
- **PESQ** (ITU-T P.862; wide band at 16 kHz, narrow band at 8 kHz) through ``pesq``; inputs are
  resampled to 16 kHz (8 kHz for nb). Failures (silence, too short, a silent degraded signal)
  give NaN and are counted, never raised.
- **STOI** through ``pystoi`` on the common length (meaningful for time-aligned pairs only).
- **F0 RMSE** (Hz, on frames voiced in both) and **V/UV error** (fraction of aligned frames whose
  voicing differs), on the MCD alignment.
- **EER** from trial scores and same/different labels; **cosine similarity** of embeddings.
- **WER / CER** (word / character error rate): Levenshtein distance between the reference and the
  hypothesis (substitutions + deletions + insertions) over the reference length, both sides
  normalised by ``text.scoring_words``; CER on the words joined by single spaces. Above 1 when the
  hypothesis inserts more than the reference holds; an empty reference with a non-empty hypothesis
  is 1.
"""
from __future__ import annotations

import math
import warnings
from abc import abstractmethod
from functools import lru_cache
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from scipy.spatial.distance import cdist
from torchmetrics import Metric

from lightning_tts.audio import FeatureParams, estimate_pitch, resample
from lightning_tts.text import scoring_words

MCD_CONST = 10.0 / math.log(10.0) * math.sqrt(2.0)
_MCEP_PARAMS = {8000: (13, 0.31), 16000: (23, 0.42), 22050: (34, 0.45), 24000: (34, 0.46), 44100: (39, 0.53),
                48000: (39, 0.55)}


def mcep_params(sample_rate: int) -> tuple[int, float]:
    """(order, all-pass alpha) for a sample rate (ESPnet's table; nearest rate otherwise)."""
    nearest = min(_MCEP_PARAMS, key=lambda sr: abs(sr - sample_rate))
    return _MCEP_PARAMS[nearest]


@lru_cache(maxsize=16)
def _freqt_matrix(n_in: int, order: int, alpha: float) -> np.ndarray:
    """(order+1, n_in) matrix of SPTK's ``freqt``: cepstrum -> all-pass-warped cepstrum (linear in c)."""
    c = np.eye(n_in)  # each column a unit cepstrum; the recursion runs over all columns at once
    g = np.zeros((order + 1, n_in))
    beta = 1.0 - alpha * alpha
    for i in range(n_in - 1, -1, -1):
        d = g.copy()
        g[0] = c[i] + alpha * d[0]
        if order >= 1:
            g[1] = beta * d[0] + alpha * d[1]
        for j in range(2, order + 1):
            g[j] = d[j - 1] + alpha * (d[j] - g[j - 1])
    return g


def frequency_warp(cepstrum: np.ndarray, order: int, alpha: float) -> np.ndarray:
    """SPTK ``freqt`` of (frames, n) cepstra -> (frames, order+1) warped cepstra."""
    return cepstrum @ _freqt_matrix(cepstrum.shape[-1], order, float(alpha)).T


def mel_cepstrum(wav: np.ndarray, sample_rate: int, order: Optional[int] = None, alpha: Optional[float] = None,
                 n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """(frames, order+1) mel-cepstra of a waveform (see the module docstring for the definition)."""
    default_order, default_alpha = mcep_params(sample_rate)
    order = default_order if order is None else order
    alpha = default_alpha if alpha is None else alpha
    x = np.asarray(wav, dtype=np.float64)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    n_frames = (len(x) - n_fft) // hop + 1
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop][:n_frames] * np.hamming(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (frames, n_fft/2+1)
    cepstrum = np.fft.irfft(np.log(power + 1e-10), n=n_fft, axis=1)  # SPTK's scale: log power
    cepstrum[:, 0] /= 2.0
    return frequency_warp(cepstrum, order, alpha)


def dtw(cost: np.ndarray) -> tuple[float, np.ndarray]:
    """Exact dynamic time warping over a (n, m) cost matrix (steps (1,0), (0,1), (1,1)).

    Each row is solved in one vectorised pass: with a_j = min(D[i-1, j], D[i-1, j-1]),
    D[i, j] = min_{k<=j} (a_k + sum_{l=k..j} cost[i, l]), a running minimum over cumulative sums.

    Returns:
        (total cost of the best path, (path_len, 2) index pairs from (0, 0) to (n-1, m-1)).
    """
    n, m = cost.shape
    acc = np.empty((n, m))
    acc[0] = np.cumsum(cost[0])
    for i in range(1, n):
        prev = acc[i - 1]
        a = np.minimum(prev, np.concatenate(([np.inf], prev[:-1])))  # from above or diagonal
        csum = np.cumsum(cost[i])
        shifted = np.concatenate(([0.0], csum[:-1]))
        acc[i] = csum + np.minimum.accumulate(a - shifted)
    path = [(n - 1, m - 1)]
    i, j = n - 1, m - 1
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            options = (acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
            k = int(np.argmin(options))
            i, j = (i - 1, j - 1) if k == 0 else ((i - 1, j) if k == 1 else (i, j - 1))
        path.append((i, j))
    return float(acc[-1, -1]), np.asarray(path[::-1])


def mcd_from_mcep(ref: np.ndarray, syn: np.ndarray, use_dtw: bool = True, include_c0: bool = False) -> tuple[float, np.ndarray]:
    """MCD (dB) between two (frames, order+1) mel-cepstrum sequences, and the frame pairs used."""
    if use_dtw:
        _, path = dtw(cdist(ref[:, 1:], syn[:, 1:]))  # Euclidean frame costs on c1..cM
    else:
        n = min(len(ref), len(syn))
        path = np.stack([np.arange(n), np.arange(n)], axis=1)
    start = 0 if include_c0 else 1
    diff = ref[path[:, 0], start:] - syn[path[:, 1], start:]
    return float(MCD_CONST * np.sqrt((diff ** 2).sum(1)).mean()), path


def mcd(ref: np.ndarray | torch.Tensor, syn: np.ndarray | torch.Tensor, sample_rate: int, use_dtw: bool = True,
        include_c0: bool = False) -> float:
    """Mel-cepstral distortion in dB between a reference and a synthesised waveform."""
    value, _ = mcd_from_mcep(mel_cepstrum(_np(ref), sample_rate), mel_cepstrum(_np(syn), sample_rate), use_dtw,
                             include_c0)
    return value


def f0_errors(ref: np.ndarray | torch.Tensor, syn: np.ndarray | torch.Tensor, sample_rate: int,
              path: Optional[np.ndarray] = None) -> tuple[float, float]:
    """(F0 RMSE in Hz on frames voiced in both, V/UV error rate) on the MCD-DTW alignment.

    Args:
        path: the (k, 2) frame pairs of ``mcd_from_mcep`` for this pair, if already computed.
    """
    ref, syn = _np(ref), _np(syn)
    n_fft, hop = 1024, 256  # the mel_cepstrum defaults, so ``path`` indexes the same frames
    if path is None:
        _, path = mcd_from_mcep(mel_cepstrum(ref, sample_rate, n_fft=n_fft, hop=hop),
                                mel_cepstrum(syn, sample_rate, n_fft=n_fft, hop=hop))
    params = FeatureParams(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop, win_length=n_fft)
    offset = n_fft // (2 * hop)  # centred pitch frame k+offset has the centre of un-centred frame k
    f_ref = estimate_pitch(torch.from_numpy(ref).float(), params).numpy()[offset:]
    f_syn = estimate_pitch(torch.from_numpy(syn).float(), params).numpy()[offset:]
    keep = (path[:, 0] < len(f_ref)) & (path[:, 1] < len(f_syn))
    a, b = f_ref[path[keep, 0]], f_syn[path[keep, 1]]
    both = (a > 0) & (b > 0)
    rmse = float(np.sqrt(((a[both] - b[both]) ** 2).mean())) if both.any() else float("nan")
    return rmse, float(((a > 0) != (b > 0)).mean()) if len(a) else float("nan")


def pesq_score(ref: np.ndarray | torch.Tensor, deg: np.ndarray | torch.Tensor, sample_rate: int,
               mode: str = "wb") -> float:
    """PESQ MOS-LQO (wb: 16 kHz, range ~1.04-4.64; nb: 8 kHz); NaN when PESQ cannot score the pair."""
    from pesq import pesq
    from pesq.cypesq import PesqError

    target = 16000 if mode == "wb" else 8000
    ref_t = resample(torch.as_tensor(_np(ref)).float(), sample_rate, target).numpy()
    deg_t = resample(torch.as_tensor(_np(deg)).float(), sample_rate, target).numpy()
    try:
        return float(pesq(target, ref_t, deg_t, mode))
    except (PesqError, ValueError):  # NoUtterancesError/BufferTooShortError derive from PesqError
        return float("nan")


def stoi_score(ref: np.ndarray | torch.Tensor, deg: np.ndarray | torch.Tensor, sample_rate: int,
               extended: bool = False) -> float:
    """STOI (0-1) on the common length; NaN when it cannot be computed."""
    from pystoi import stoi

    ref, deg = _np(ref), _np(deg)
    n = min(len(ref), len(deg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pystoi warns (not raises) on too-short input
        try:
            value = float(stoi(ref[:n], deg[:n], sample_rate, extended=extended))
        except (ValueError, IndexError):
            return float("nan")
    return value if np.isfinite(value) and n >= sample_rate // 4 else float("nan")


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of embeddings along the last dimension."""
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def equal_error_rate(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> tuple[float, float]:
    """(EER, threshold) of verification trials: ``labels`` 1 = same speaker, 0 = different.

    The EER is where the false-acceptance rate equals the false-rejection rate, linearly
    interpolated between the two thresholds around the crossing.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if labels.min() == labels.max():
        raise ValueError("EER needs both target (1) and non-target (0) trials")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    n_pos, n_neg = y.sum(), (1 - y).sum()
    # accepting the top k trials: FAR = negatives accepted / n_neg, FRR = positives rejected / n_pos
    far = np.concatenate(([0.0], np.cumsum(1 - y) / n_neg))
    frr = np.concatenate(([1.0], 1 - np.cumsum(y) / n_pos))
    k = int(np.argmax(far >= frr))
    if k == 0:
        return 0.0, float(s[0])
    d0, d1 = frr[k - 1] - far[k - 1], frr[k] - far[k]
    t = d0 / (d0 - d1) if d0 != d1 else 0.0
    eer = far[k - 1] + t * (far[k] - far[k - 1])
    return float(eer), float(s[k - 1])


def verification_scores(embeddings: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(EER over every pair, cosine silhouette) of unit-length (N, D) embeddings with (N,) labels."""
    from sklearn.metrics import silhouette_score  # scikit-learn is slow to import; only embed/metric runs need it

    scores = embeddings @ embeddings.T
    i, j = np.triu_indices(len(labels), k=1)
    eer, _ = equal_error_rate(scores[i, j], (labels[i] == labels[j]).astype(np.int64))
    return eer, float(silhouette_score(embeddings, labels, metric="cosine"))


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance: the fewest substitutions, deletions and insertions turning ``ref`` into
    ``hyp`` (unit costs)."""
    row = list(range(len(hyp) + 1))  # distances from ref[:0] to every prefix of hyp
    for i, r in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[-1]


def error_rate(ref: Sequence[str], hyp: Sequence[str]) -> float:
    """Edit distance over the reference length (1 for an empty reference unless both are empty)."""
    if not ref:
        return float(bool(hyp))
    return edit_distance(ref, hyp) / len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER of a transcript against its reference text (both normalised by ``scoring_words``)."""
    return error_rate(scoring_words(reference), scoring_words(hypothesis))


def char_error_rate(reference: str, hypothesis: str) -> float:
    """CER: the error rate over characters of the normalised words joined by single spaces."""
    return error_rate(list(" ".join(scoring_words(reference))), list(" ".join(scoring_words(hypothesis))))


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """1-D float64 numpy view of a waveform."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


class ScoreMean(Metric):
    """Mean of per-utterance scores over everything seen, on every rank (sums are all-reduced).

    NaN scores are failures: counted in ``failures``, left out of the mean.
    """

    full_state_update = False
    higher_is_better: Optional[bool] = None

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("failures", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, values: Sequence[float]) -> None:
        """Add scores (NaN or inf: a failure)."""
        for value in values:
            self._add(value)

    def _add(self, value: float) -> None:
        if math.isfinite(value):
            self.total += value
            self.count += 1
        else:
            self.failures += 1

    def compute(self) -> torch.Tensor:
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"), dtype=torch.float64)


class UtteranceScore(ScoreMean):
    """``ScoreMean`` of a score computed from (reference, synthesised) waveform pairs. Subclasses
    define ``score(ref, syn)`` for one pair.

    Args:
        sample_rate: of the waveforms given to ``update``.
    """

    def __init__(self, sample_rate: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sample_rate = sample_rate

    @abstractmethod
    def score(self, ref: torch.Tensor, syn: torch.Tensor) -> float:
        """The score of one pair."""

    def update(self, refs: Sequence[torch.Tensor], syns: Sequence[torch.Tensor]) -> None:  # type: ignore[override]
        """Score each (reference, synthesised) pair."""
        for ref, syn in zip(refs, syns):
            self._add(self.score(ref, syn))


class MelCepstralDistortion(UtteranceScore):
    """MCD-DTW in dB (lower is better); see ``mcd``."""

    higher_is_better = False

    def __init__(self, sample_rate: int, use_dtw: bool = True, include_c0: bool = False, **kwargs) -> None:
        super().__init__(sample_rate, **kwargs)
        self.use_dtw, self.include_c0 = use_dtw, include_c0

    def score(self, ref: torch.Tensor, syn: torch.Tensor) -> float:
        return mcd(ref, syn, self.sample_rate, self.use_dtw, self.include_c0)


class PESQ(UtteranceScore):
    """PESQ (higher is better); failures counted, see ``pesq_score``."""

    higher_is_better = True

    def __init__(self, sample_rate: int, mode: str = "wb", **kwargs) -> None:
        super().__init__(sample_rate, **kwargs)
        self.mode = mode

    def score(self, ref: torch.Tensor, syn: torch.Tensor) -> float:
        return pesq_score(ref, syn, self.sample_rate, self.mode)


class STOI(UtteranceScore):
    """STOI (higher is better); see ``stoi_score``."""

    higher_is_better = True

    def score(self, ref: torch.Tensor, syn: torch.Tensor) -> float:
        return stoi_score(ref, syn, self.sample_rate)


class SpeakerSimilarity(UtteranceScore):
    """Speaker similarity (SECS, higher is better): cosine between the speaker embeddings of the
    reference and the synthesised waveform.

    Args:
        sample_rate: of the waveforms.
        embed: waveform (N,) at ``sample_rate`` -> (D,) embedding, from an evaluation encoder trained
            apart from the model under test (``evaluation.judges.build_judge``).
    """

    higher_is_better = True

    def __init__(self, sample_rate: int, embed: Callable[[torch.Tensor], torch.Tensor], **kwargs) -> None:
        super().__init__(sample_rate, **kwargs)
        self.embed = embed

    def score(self, ref: torch.Tensor, syn: torch.Tensor) -> float:
        return float(cosine_similarity(self.embed(ref), self.embed(syn)))
