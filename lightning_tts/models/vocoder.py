"""Mel -> waveform, behind one seam: ``build_vocoder(VocoderConfig, FeatureParams)``.

Everything that makes audio (``synthesize``, ``evaluate``, the few-shot callback, benchmarks) asks
``build_vocoder`` for a ``Vocoder``; the ``vocoder`` config section names it (``vocoder.name``) and
carries each vocoder's options in a sub-section of its own: Griffin-Lim (no training, any features)
and HiFi-GAN V1 (``models/hifigan.py``: pretrained, 22 050 Hz features only). Adding a vocoder = its
module in ``models/`` + a field of ``VocoderConfig`` + an entry in ``VOCODERS``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch
import torchaudio

from lightning_tts.audio import FeatureParams
from lightning_tts.errors import ConfigError
from lightning_tts.models.hifigan import HiFiGANConfig, HiFiGANVocoder


class Vocoder(Protocol):
    """Anything that turns log-mels into audio at ``sample_rate``."""

    sample_rate: int

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        """(T, n_mels) log-mel -> (T * hop_length,) waveform in [-1, 1]."""
        ...

    def batch(self, mels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Many mels at once (where many utterances are made: ``evaluate``): each (T_i, n_mels) ->
        (T_i * hop_length,)."""
        ...


@dataclass
class GriffinLimConfig:
    """Options of ``GriffinLimVocoder`` (``vocoder.griffin_lim``).

    Attributes:
        iters: Griffin-Lim iterations.
    """

    iters: int = 32


@dataclass
class VocoderConfig:
    """The ``vocoder`` config section: which vocoder turns mels into audio, and each one's options.

    Attributes:
        name: a key of ``VOCODERS``.
        griffin_lim: options of ``griffin_lim``.
        hifigan: options of ``hifigan``.
    """

    name: str = "griffin_lim"
    griffin_lim: GriffinLimConfig = field(default_factory=GriffinLimConfig)
    hifigan: HiFiGANConfig = field(default_factory=HiFiGANConfig)


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

    def batch(self, mels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """One at a time: padding would change the phase reconstruction, and Griffin-Lim's cost is
        per frame, so batching buys nothing on a CPU."""
        return [self(mel) for mel in mels]


VOCODERS: dict[str, Callable[[VocoderConfig, FeatureParams], Vocoder]] = {
    "griffin_lim": lambda config, params: GriffinLimVocoder(params, config.griffin_lim.iters),
    "hifigan": lambda config, params: HiFiGANVocoder(params, config.hifigan),
}


def build_vocoder(config: VocoderConfig, params: FeatureParams) -> Vocoder:
    """The vocoder named by ``config.name`` for mels of ``params``.

    Raises:
        ConfigError: an unknown vocoder name.
    """
    if config.name not in VOCODERS:
        raise ConfigError(f"unknown vocoder.name {config.name!r}; available: {', '.join(sorted(VOCODERS))}")
    return VOCODERS[config.name](config, params)
