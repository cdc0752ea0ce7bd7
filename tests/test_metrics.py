"""Metrics against references: SPTK, pymcd, brute-force DTW, PESQ's range, and DDP sync."""
from __future__ import annotations

import socket
from pathlib import Path

import librosa
import numpy as np
import pymcd.mcd
import pysptk
import pytest
import soundfile as sf
import torch

from lightning_tts.metrics import (
    MelCepstralDistortion,
    PESQ,
    dtw,
    equal_error_rate,
    f0_errors,
    frequency_warp,
    mcd,
    mcd_from_mcep,
    mel_cepstrum,
    pesq_score,
    stoi_score,
)



@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    """A real recording shipped with pysptk (CMU ARCTIC a0007, 16 kHz)."""
    audio, sr = sf.read(Path(pysptk.__file__).parent / "example_audio_data" / "arctic_a0007.wav")
    return audio, sr


def test_freqt_and_mel_cepstrum_equal_sptk(speech) -> None:
    x, sr = speech
    c = np.random.default_rng(0).normal(size=1024)
    assert np.allclose(frequency_warp(c[None], 23, 0.42)[0], pysptk.freqt(c, 23, 0.42), atol=1e-12)
    ours = mel_cepstrum(x, sr)
    window = np.hamming(1024)
    for k in (10, 80, 200):
        ref = pysptk.mcep(x[k * 256: k * 256 + 1024] * window, 23, 0.42, maxiter=0, etype=1, eps=1e-10, min_det=0.0)
        assert np.allclose(ours[k], ref, atol=1e-9)


def test_mcd_zero_for_identical_and_grows_with_distortion(speech) -> None:
    x, sr = speech
    rng = np.random.default_rng(1)
    assert mcd(x, x, sr) == 0.0
    values = [mcd(x, x + level * rng.normal(size=len(x)), sr) for level in (0.001, 0.01, 0.05)]
    assert 0 < values[0] < values[1] < values[2]
    assert mcd(x, x, sr, include_c0=True) == 0.0 and mcd(x, 0.5 * x, sr, include_c0=True) > mcd(x, 0.5 * x, sr)


def _brute_dtw(cost: np.ndarray) -> float:
    n, m = cost.shape
    acc = np.full((n, m), np.inf)
    for i in range(n):
        for j in range(m):
            best = 0.0 if i == j == 0 else min(acc[i - 1, j] if i else np.inf, acc[i, j - 1] if j else np.inf,
                                              acc[i - 1, j - 1] if i and j else np.inf)
            acc[i, j] = cost[i, j] + best
    return acc[-1, -1]


@pytest.mark.parametrize("shape", [(1, 5), (6, 1), (7, 9), (12, 8)])
def test_dtw_equals_brute_force(shape: tuple[int, int]) -> None:
    cost = np.random.default_rng(sum(shape)).random(shape)
    total, path = dtw(cost)
    assert total == pytest.approx(_brute_dtw(cost), rel=1e-12)
    assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (shape[0] - 1, shape[1] - 1)
    steps = np.diff(path, axis=0)
    assert ((steps >= 0) & (steps <= 1)).all() and (steps.sum(1) >= 1).all()
    assert cost[path[:, 0], path[:, 1]].sum() == pytest.approx(total)


def test_mcd_matches_pymcd_dtw(speech, tmp_path: Path) -> None:
    """Same mel-cepstra (pymcd's WORLD features), our exact DTW vs pymcd's fastdtw.

    Asserted to 1 % on these two pairs (a time-stretched and a noisy copy of one utterance).
    """
    x, sr = speech
    rng = np.random.default_rng(2)
    pairs = {"stretch": librosa.effects.time_stretch(x.astype(np.float32), rate=1.15),
             "noise": x + 0.01 * rng.normal(size=len(x))}
    sf.write(tmp_path / "ref.wav", x, sr)
    calc = pymcd.mcd.Calculate_MCD("dtw")
    ref_mcep = calc.wav2mcep_numpy(calc.load_wav(str(tmp_path / "ref.wav"), 22050))
    for name, audio in pairs.items():
        sf.write(tmp_path / f"{name}.wav", audio, sr)
        expected = calc.calculate_mcd(str(tmp_path / "ref.wav"), str(tmp_path / f"{name}.wav"))
        syn_mcep = calc.wav2mcep_numpy(calc.load_wav(str(tmp_path / f"{name}.wav"), 22050))
        ours, _ = mcd_from_mcep(ref_mcep, syn_mcep, use_dtw=True, include_c0=True)  # pymcd keeps c0
        assert ours == pytest.approx(expected, rel=0.01), name


def test_pesq_range_and_counted_failures(speech) -> None:
    x, sr = speech
    assert pesq_score(x, x, sr) == pytest.approx(4.64, abs=0.01)  # the wide-band maximum
    assert pesq_score(x, x, sr, mode="nb") > 4.4
    assert 1.0 < pesq_score(x, x + 0.02 * np.random.default_rng(0).normal(size=len(x)), sr) < 3.0
    failures = {
        "silence": (np.zeros(sr), np.zeros(sr)),
        "too short": (x[: sr // 10], x[: sr // 10]),
        "silent degraded": (x, np.zeros_like(x)),
    }
    metric = PESQ(sr)
    for name, (ref, deg) in failures.items():
        assert np.isnan(pesq_score(ref, deg, sr)), name
        metric.update([torch.from_numpy(ref)], [torch.from_numpy(deg)])
    metric.update([torch.from_numpy(x)], [torch.from_numpy(x)])
    assert int(metric.failures) == 3 and int(metric.count) == 1
    assert float(metric.compute()) == pytest.approx(4.64, abs=0.01)


def test_stoi_f0_and_eer(speech) -> None:
    x, sr = speech
    assert stoi_score(x, x, sr) == pytest.approx(1.0, abs=1e-6)
    assert stoi_score(x, x + 0.05 * np.random.default_rng(0).normal(size=len(x)), sr) < 0.95
    rmse, vuv = f0_errors(x, x, sr)
    assert rmse == 0.0 and vuv == 0.0
    t = np.arange(sr) / sr
    low, high = 0.5 * np.sin(2 * np.pi * 120 * t), 0.5 * np.sin(2 * np.pi * 150 * t)
    rmse, vuv = f0_errors(low, high, sr)
    assert rmse == pytest.approx(30, abs=4) and vuv < 0.1
    eer, _ = equal_error_rate([0.9, 0.8, 0.7, 0.6, 0.4, 0.3], [1, 1, 0, 1, 0, 0])
    assert eer == pytest.approx(1 / 3)
    assert equal_error_rate([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0])[0] == 0.0
    with pytest.raises(ValueError):
        equal_error_rate([0.1, 0.2], [1, 1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, port: int, pairs: list, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    metric = MelCepstralDistortion(16000)
    metric.update(*zip(*pairs[rank::2]))
    torch.save(metric.compute(), f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_metric_is_the_same_with_one_and_two_ranks(speech, tmp_path: Path) -> None:
    x, sr = speech
    rng = np.random.default_rng(3)
    pairs = [(torch.from_numpy(x), torch.from_numpy(x + level * rng.normal(size=len(x))))
             for level in (0.002, 0.01, 0.02, 0.05, 0.1)]
    single = MelCepstralDistortion(sr)
    single.update(*zip(*pairs))
    torch.multiprocessing.spawn(_rank_worker, args=(_free_port(), pairs, str(tmp_path)), nprocs=2)
    for rank in range(2):
        assert float(torch.load(tmp_path / f"rank{rank}.pt")) == pytest.approx(float(single.compute()), rel=1e-12)
