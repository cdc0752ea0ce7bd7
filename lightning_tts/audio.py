"""Waveform I/O (soundfile), resampling, log-mel, pitch and energy (torchaudio transforms).

``FeatureParams`` is the single definition of the acoustic features; its ``key()`` names the
feature cache, so changing any parameter builds a new cache instead of mixing two.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import soundfile as sf
import torch
import torchaudio

from lightning_tts.atomic import atomic_path
from lightning_tts.errors import AudioError

FEATURE_VERSION = 1  # bump when the feature computation itself changes
AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass(frozen=True)
class FeatureParams:
    """Acoustic feature parameters (16 kHz and 80 mels by default; PESQ needs 16 kHz)."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    pitch: bool = False
    energy: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "FeatureParams":
        """Build from the ``features`` config section."""
        return cls(**{k: cfg[k] for k in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, as stored in checkpoints and cache manifests."""
        return asdict(self)

    def key(self) -> str:
        """Short stable hash of the parameters and the feature code version."""
        blob = json.dumps({"version": FEATURE_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    def n_frames(self, n_samples: int) -> int:
        """Mel frames for ``n_samples`` samples (centred STFT)."""
        return n_samples // self.hop_length + 1

    def reflectable(self, n_samples: int) -> bool:
        """Whether ``n_samples`` samples can be reflected by ``n_fft // 2`` at each end to centre the
        STFT frames (shorter clips are zero-padded by ``FeatureExtractor``; the cache refuses them)."""
        return n_samples > self.n_fft // 2


def audio_info(path: str | os.PathLike) -> tuple[int, int]:
    """(frames, sample_rate) from the file header, without decoding.

    Raises:
        AudioError: the file is missing or not a readable audio file.
    """
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError or OSError
        raise AudioError(f"unreadable audio file {path}: {_first_line(err)}") from err
    return int(info.frames), int(info.samplerate)


def read_audio(path: str | os.PathLike, sample_rate: int) -> torch.Tensor:
    """Decode an audio file to mono float32 at ``sample_rate``.

    Returns:
        (T,) waveform in [-1, 1].

    Raises:
        AudioError: unreadable, corrupt or empty file.
    """
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except Exception as err:
        raise AudioError(f"unreadable audio file {path}: {_first_line(err)}") from err
    if data.shape[0] == 0:
        raise AudioError(f"empty audio file {path}")
    wav = torch.from_numpy(data.mean(axis=1))  # (T,)
    return resample(wav, sr, sample_rate)


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling of (..., T) audio; a no-op when rates match."""
    if orig_sr == new_sr:
        return wav
    return torchaudio.functional.resample(wav, orig_sr, new_sr)


def write_audio(path: str | os.PathLike, wav: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Write mono audio as 16-bit PCM (format from the suffix: .wav or .flac), atomically."""
    target = Path(path)
    if target.suffix.lower() not in AUDIO_SUFFIXES:
        raise AudioError(f"cannot write {target}: suffix must be one of {', '.join(AUDIO_SUFFIXES)}")
    samples = wav.detach().cpu().float().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    samples = np.clip(samples.reshape(-1), -1.0, 1.0)
    with atomic_path(target) as tmp:
        sf.write(str(tmp), samples, sample_rate, subtype="PCM_16", format=target.suffix[1:].upper())


class FeatureExtractor(torch.nn.Module):
    """Waveform -> log-mel (+ optional pitch and energy), all at ``hop_length`` frames.

    Log-mel is ``log(max(mel_magnitude, 1e-5))`` of a slaney-normalised mel filterbank applied to
    the STFT magnitude (power 1), the convention of HiFi-GAN/FastPitch recipes. Frames are centred
    by reflecting the waveform at its ends; a waveform of at most ``n_fft // 2`` samples, too short
    to reflect (a near-empty synthesis of an untrained model, say), is padded with zeros instead, as
    ``estimate_pitch`` does, so it still has ``params.n_frames(len(wav))`` frames (an empty one, one
    silent frame).
    """

    def __init__(self, params: FeatureParams) -> None:
        super().__init__()
        self.params = params
        stft = dict(n_fft=params.n_fft, win_length=params.win_length, hop_length=params.hop_length, power=1.0,
                    center=True)
        self.spectrogram = torchaudio.transforms.Spectrogram(**stft)  # pad_mode="reflect"
        self.short_spectrogram = torchaudio.transforms.Spectrogram(**stft, pad_mode="constant")
        self.mel_scale = torchaudio.transforms.MelScale(
            n_mels=params.n_mels,
            sample_rate=params.sample_rate,
            f_min=params.fmin,
            f_max=params.fmax,
            n_stft=params.n_fft // 2 + 1,
            norm="slaney",
            mel_scale="slaney",
        )

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of one (T,) waveform: ``mel`` (frames, n_mels), ``pitch``/``energy`` (frames,)."""
        if wav.numel() == 0:
            wav = wav.new_zeros(1)  # an empty clip: one silent frame, as n_frames(0) says
        spectrogram = self.spectrogram if self.params.reflectable(wav.numel()) else self.short_spectrogram
        magnitude = spectrogram(wav)  # (n_fft/2+1, frames)
        mel = torch.log(torch.clamp(self.mel_scale(magnitude), min=1e-5)).T.contiguous()  # (frames, n_mels)
        out = {"mel": mel}
        if self.params.energy:
            out["energy"] = torch.linalg.vector_norm(magnitude, dim=0)  # (frames,)
        if self.params.pitch:
            out["pitch"] = estimate_pitch(wav, self.params)  # (frames,)
        return out


def estimate_pitch(
    wav: torch.Tensor, params: FeatureParams, f0_min: float = 50.0, f0_max: float = 600.0, threshold: float = 0.35
) -> torch.Tensor:
    """Frame-wise F0 in Hz by normalised autocorrelation; 0 for unvoiced frames.

    Each centred frame of ``win_length`` samples is autocorrelated (via FFT); the F0 is the sample
    rate over the lag of the highest peak in [sr/f0_max, sr/f0_min]; a frame is voiced when that
    peak exceeds ``threshold`` times the zero-lag energy.

    Returns:
        (frames,) with frames = ``params.n_frames(len(wav))``.
    """
    win, hop, sr = params.win_length, params.hop_length, params.sample_rate
    mode = "reflect" if wav.numel() > win // 2 else "constant"  # reflection needs more than half a window
    padded = torch.nn.functional.pad(wav[None, None], (win // 2, win // 2), mode=mode)[0, 0]
    frames = padded.unfold(0, win, hop)[: params.n_frames(wav.numel())]  # (frames, win)
    frames = frames - frames.mean(dim=1, keepdim=True)
    spec = torch.fft.rfft(frames * torch.hann_window(win), n=2 * win)
    acf = torch.fft.irfft(spec.abs() ** 2)[:, :win]  # (frames, win)
    lo, hi = int(sr / f0_max), min(int(sr / f0_min), win - 1)
    peak, lag = acf[:, lo:hi].max(dim=1)
    voiced = peak > threshold * acf[:, 0].clamp_min(1e-8)
    f0 = sr / (lag + lo).float()
    return torch.where(voiced, f0, torch.zeros_like(f0))


def _first_line(err: BaseException) -> str:
    """First line of an exception message, or its type name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
