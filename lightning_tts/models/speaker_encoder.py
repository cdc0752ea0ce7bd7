"""Speaker encoder: log-mel -> L2-normalised speaker embedding (d-vector).

A stack of dilated 1-D convolutions with per-frame layer norm over frames (TDNN, as in x-vectors, Snyder et al., 2018), masked
mean + standard-deviation pooling over time, and a linear projection normalised to unit length
(d-vectors, Wan et al., 2018). ``embed`` handles utterances longer than ``window`` frames by
embedding overlapping partial windows and averaging them (the GE2E inference recipe), so a long
reference costs no more memory than ``window`` frames at a time.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lightning_tts.models.acoustic import lengths_to_mask


class FrameEncoder(nn.Module):
    """Dilated 1-D convolutions over frames with per-frame layer norm: (B, T, n_mels) -> (B, C, T).

    Args:
        n_mels: mel channels of the input.
        channels: C.
        layers: convolution layers (dilation doubles each layer: 1, 2, 4, ...).
    """

    def __init__(self, n_mels: int, channels: int, layers: int) -> None:
        super().__init__()
        self.channels = channels
        self.convs = nn.ModuleList(nn.Conv1d(n_mels if i == 0 else channels, channels, 5, dilation=2 ** i,
                                             padding=2 * 2 ** i) for i in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(layers))  # per frame: padding never enters

    def forward(self, mels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """mels (B, T, n_mels), lengths (B,) -> (B, C, T) features, zero past each length."""
        mask = lengths_to_mask(lengths, mels.shape[1])[:, None].to(mels.dtype)  # (B, 1, T)
        h = mels.transpose(1, 2) * mask  # (B, n_mels, T)
        for conv, norm in zip(self.convs, self.norms):
            h = F.relu(norm(conv(h).transpose(1, 2)).transpose(1, 2)) * mask  # (B, C, T)
        return h


@dataclass
class SpeakerEncoderConfig:
    """Sizes of ``SpeakerEncoder`` (a metric learner's ``learner.encoder`` section).

    Attributes:
        channels: convolution channels.
        layers: convolution layers.
        dim: embedding size.
        window: frames per partial window in ``embed`` (and the training crop length).
    """

    channels: int = 256
    layers: int = 4
    dim: int = 128
    window: int = 160


class SpeakerEncoder(nn.Module):
    """Mel frames -> unit-length speaker embedding.

    Args:
        n_mels: mel channels of the input.
        config: sizes (``SpeakerEncoderConfig``).
    """

    def __init__(self, n_mels: int, config: SpeakerEncoderConfig) -> None:
        super().__init__()
        if config.window < 8:
            raise ValueError(f"speaker encoder window must be >= 8 frames, got {config.window}")
        self.dim, self.window = config.dim, config.window
        self.frames = FrameEncoder(n_mels, config.channels, config.layers)
        self.proj = nn.Linear(2 * config.channels, config.dim)

    def forward(self, mels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Embed whole utterances.

        Args:
            mels: (B, T, n_mels) log-mels, padded.
            lengths: (B,) real frames of each.

        Returns:
            (B, dim) unit-length embeddings.
        """
        h = self.frames(mels, lengths)  # (B, C, T)
        mask = lengths_to_mask(lengths, mels.shape[1])[:, None].to(h.dtype)  # (B, 1, T)
        count = mask.sum(dim=2).clamp_min(1.0)  # (B, 1)
        mean = h.sum(dim=2) / count  # (B, C)
        var = ((h - mean[:, :, None]) ** 2 * mask).sum(dim=2) / count
        stats = torch.cat([mean, torch.sqrt(var + 1e-5)], dim=1)  # (B, 2C)
        return F.normalize(self.proj(stats), dim=-1)

    def windows(self, mel: torch.Tensor) -> torch.Tensor:
        """(T, n_mels) -> (W, window, n_mels) partial windows with 50 % overlap covering the utterance
        (one window, unpadded, when ``T <= window``)."""
        t = mel.shape[0]
        if t <= self.window:
            return mel[None]
        hop = self.window // 2
        starts = list(range(0, t - self.window + 1, hop))
        if starts[-1] + self.window < t:
            starts.append(t - self.window)
        return torch.stack([mel[s: s + self.window] for s in starts])

    def embed(self, mels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Embed utterances of any length: the normalised mean of their partial windows' embeddings.

        Args:
            mels: (B, T, n_mels) log-mels, padded.
            lengths: (B,) real frames of each.

        Returns:
            (B, dim) unit-length embeddings.
        """
        pieces = [self.windows(mels[i, : int(lengths[i])]) for i in range(len(mels))]  # each (W_i, t_i, n_mels)
        counts = [len(p) for p in pieces]
        flat = [w for p in pieces for w in p]
        flat_lengths = torch.tensor([len(w) for w in flat], device=mels.device)
        padded = nn.utils.rnn.pad_sequence(flat, batch_first=True)  # (sum W, t, n_mels)
        per_window = self(padded, flat_lengths)  # (sum W, dim)
        means = torch.stack([chunk.mean(dim=0) for chunk in per_window.split(counts)])
        return F.normalize(means, dim=-1)

    def centroid(self, mels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(K, T, n_mels), (K,) reference utterances of one voice -> (dim,) their normalised mean embedding."""
        return self.centroids(mels, lengths, 1)[0]

    def centroids(self, mels: torch.Tensor, lengths: torch.Tensor, voices: int) -> torch.Tensor:
        """(V*K, T, n_mels), (V*K,) reference utterances of ``voices`` voices, K each (voice-major) ->
        (V, dim): each voice's normalised mean embedding."""
        per_voice = self.embed(mels, lengths).reshape(voices, len(mels) // voices, -1)  # (V, K, dim)
        return F.normalize(per_voice.mean(dim=1), dim=-1)

    def random_crop(self, mels: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training crops: a random ``window``-frame span of each utterance longer than ``window``.

        Returns:
            (B, min(T, window), n_mels) crops and their (B,) lengths.
        """
        width = min(mels.shape[1], self.window)
        starts = (torch.rand(len(mels), device=mels.device) * (lengths - width).clamp_min(0).to(mels.dtype)).long()
        idx = starts[:, None] + torch.arange(width, device=mels.device)[None]  # (B, width)
        idx = idx.clamp_max(mels.shape[1] - 1)
        crops = torch.gather(mels, 1, idx[:, :, None].expand(-1, -1, mels.shape[2]))
        return crops, lengths.clamp_max(width)


@dataclass
class SegmentEncoderConfig:
    """Sizes of ``SegmentEncoder`` (the memory-augmented learner's ``learner.encoder`` section; MAML's
    ``learner.writer`` for ``speaker_start=memory``).

    Attributes:
        channels: convolution channels.
        layers: convolution layers.
        segment: frames averaged into one vector.
    """

    channels: int = 128
    layers: int = 3
    segment: int = 16


class SegmentEncoder(nn.Module):
    """Mel frames -> one unit-length vector per ``segment`` frames (the evidence a memory-augmented
    learner writes). Unit length, so that a write's evidence is its direction, not its size.

    Args:
        n_mels: mel channels of the input.
        config: sizes (``SegmentEncoderConfig``).
        dim: vector size (the memory's width).
    """

    def __init__(self, n_mels: int, config: SegmentEncoderConfig, dim: int) -> None:
        super().__init__()
        if config.segment < 1:
            raise ValueError(f"segment must be >= 1 frame, got {config.segment}")
        self.segment = config.segment
        self.frames = FrameEncoder(n_mels, config.channels, config.layers)
        self.proj = nn.Linear(config.channels, dim)

    def forward(self, mels: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mels (B, T, n_mels), lengths (B,) -> (B, S, dim) unit segment vectors and (B, S) mask of real
        segments (S = ceil(T / segment); a segment is real if it has at least one real frame)."""
        h = self.frames(mels, lengths)  # (B, C, T)
        t = h.shape[2]
        pad = (-t) % self.segment
        h = F.pad(h, (0, pad))
        frame_mask = F.pad(lengths_to_mask(lengths, t).to(h.dtype), (0, pad))  # (B, T')
        sums = h.unfold(2, self.segment, self.segment).sum(-1)  # (B, C, S)
        counts = frame_mask.unfold(1, self.segment, self.segment).sum(-1)  # (B, S)
        vectors = F.normalize(self.proj((sums / counts.clamp_min(1.0)[:, None]).transpose(1, 2)), dim=-1)  # (B, S, dim)
        return vectors, counts > 0
