"""Mel -> waveform. Griffin-Lim (torchaudio) by default, behind a small interface a neural vocoder can fill."""
from __future__ import annotations

from typing import Protocol

import torch
import torchaudio

from lightning_tts.audio import FeatureParams


class Vocoder(Protocol):
    """Anything that turns log-mels into audio at ``sample_rate``."""

    sample_rate: int

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        """(T, n_mels) log-mel -> (T * hop_length,) waveform in [-1, 1]."""
        ...


class GriffinLimVocoder(torch.nn.Module):
    """Inverts the log-mel of ``FeatureExtractor``: exp, mel pseudo-inverse to a linear magnitude, then
    Griffin-Lim phase reconstruction (Griffin & Lim, 1984) from zero phase, so the same mel always
    gives the same waveform.

    Args:
        params: the feature parameters the mels were computed with.
        n_iter: Griffin-Lim iterations.
    """

    def __init__(self, params: FeatureParams, n_iter: int = 32) -> None:
        super().__init__()
        self.sample_rate = params.sample_rate
        self.hop_length = params.hop_length
        self.min_frames = params.n_fft // params.hop_length + 1  # Griffin-Lim's STFT reflects half a window
        mel_scale = torchaudio.transforms.MelScale(n_mels=params.n_mels, sample_rate=params.sample_rate,
                                                   f_min=params.fmin, f_max=params.fmax, n_stft=params.n_fft // 2 + 1,
                                                   norm="slaney", mel_scale="slaney")
        self.register_buffer("inverse", torch.linalg.pinv(mel_scale.fb.T))  # (n_freq, n_mels)
        self.griffin_lim = torchaudio.transforms.GriffinLim(n_fft=params.n_fft, n_iter=n_iter,
                                                            win_length=params.win_length,
                                                            hop_length=params.hop_length, power=1.0,
                                                            rand_init=False)  # deterministic: zero initial phase

    @torch.no_grad()
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(T, n_mels) log-mel -> (samples,) waveform, peak-limited to 0.99."""
        frames = mel.shape[0]
        if frames < self.min_frames:  # too short for Griffin-Lim's STFT: pad with silence, trim after
            silence = torch.full((self.min_frames - frames, mel.shape[1]), float(torch.log(torch.tensor(1e-5))))
            mel = torch.cat([mel.float().cpu(), silence])
        magnitude = (self.inverse @ torch.exp(mel.float()).T).clamp_min(0.0)  # (n_freq, T)
        wav = self.griffin_lim(magnitude)[: max(frames, 1) * self.hop_length]
        peak = wav.abs().max()
        return wav * (0.99 / peak) if peak > 0.99 else wav
