"""Non-autoregressive acoustic model with learned alignment: tokens + speaker vector -> log-mel.

FastPitch/FastSpeech2 family (Łańcucki, 2021; Ren et al., 2021): a transformer encoder over token
embeddings, a duration predictor (and optional pitch/energy predictors), a length regulator, and a
transformer decoder. Durations are learned jointly by ``AlignmentEncoder`` (see ``alignment.py``),
so no external aligner is needed.

The speaker enters as a vector ``speaker`` (B, speaker_dim): whoever calls the model decides where it
comes from (a lookup table, a speaker encoder, a memory read). It is added to the encoder output and
drives the conditional layer norms of the decoder (AdaSpeech, Chen et al., 2021), so adapting a voice
can touch only ``speaker_parameter_names()``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from lightning_tts.models.alignment import AlignmentEncoder, beta_binomial_prior, maximum_path


@dataclass
class AcousticOutput:
    """What one forward pass produces.

    Attributes:
        mel: (B, T, n_mels) predicted log-mel.
        mel_lengths: (B,) frames of each prediction.
        log_durations: (B, L) predicted log(1 + frames) per token.
        durations: (B, L) frames per token used by the length regulator (hard alignment when
            teacher-forced, rounded predictions otherwise).
        attn_soft: (B, T, L) soft alignment (teacher-forced only).
        attn_log: (B, T, L) its log (teacher-forced only).
        attn_hard: (B, T, L) monotonic hard alignment (teacher-forced only).
        pitch: (B, L) predicted per-token pitch, when the model has a pitch predictor.
        pitch_target: (B, L) per-token pitch target (teacher-forced only).
        energy: (B, L) predicted per-token energy, when the model has an energy predictor.
        energy_target: (B, L) per-token energy target (teacher-forced only).
        decoder_mel: (B, T, n_mels) the decoder's log-mel before the postnet's residual, when the
            model has a postnet (``mel`` is then decoder_mel + postnet(decoder_mel)).
    """

    mel: torch.Tensor
    mel_lengths: torch.Tensor
    log_durations: torch.Tensor
    durations: torch.Tensor
    attn_soft: Optional[torch.Tensor] = None
    attn_log: Optional[torch.Tensor] = None
    attn_hard: Optional[torch.Tensor] = None
    pitch: Optional[torch.Tensor] = None
    pitch_target: Optional[torch.Tensor] = None
    energy: Optional[torch.Tensor] = None
    energy_target: Optional[torch.Tensor] = None
    decoder_mel: Optional[torch.Tensor] = None


def sinusoids(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """(length, dim) sinusoidal position encoding (Vaswani et al., 2017)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    enc = torch.zeros(length, dim, device=device)
    enc[:, 0::2] = torch.sin(pos * freq)
    enc[:, 1::2] = torch.cos(pos * freq)
    return enc


def lengths_to_mask(lengths: torch.Tensor, max_len: Optional[int] = None) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) True on real positions."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None] < lengths[:, None]


class ConditionalLayerNorm(nn.Module):
    """Layer norm whose scale and shift are predicted from the speaker vector (AdaSpeech).

    ``y = (1 + W_s s) * LN(x) + W_b s``; both projections start at zero, so an untrained CLN is a
    plain layer norm.
    """

    def __init__(self, dim: int, speaker_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.scale = nn.Linear(speaker_dim, dim)
        self.shift = nn.Linear(speaker_dim, dim)
        for layer in (self.scale, self.shift):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), speaker (B, S) -> (B, T, D)."""
        return (1 + self.scale(speaker)[:, None]) * self.norm(x) + self.shift(speaker)[:, None]


class SelfAttention(nn.Module):
    """Multi-head self-attention written out (softmax(QK^T / sqrt(d)) V).

    Not ``nn.MultiheadAttention``: that dispatches to fused scaled-dot-product kernels whose
    double backward is not implemented on CPU, and second-order MAML differentiates through the
    gradient of this layer.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"model dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), mask (B, T) True on real positions -> (B, T, D)."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, T, d_h)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)  # (B, H, T, T)
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        return self.out((weights @ v).transpose(1, 2).reshape(b, t, d))


class FFTBlock(nn.Module):
    """Feed-forward transformer block: self-attention + 1-D conv feed-forward, post-norm.

    Args:
        dim: model width.
        heads: attention heads.
        ffn_dim: hidden channels of the conv feed-forward.
        kernel_size: its kernel size.
        dropout: dropout rate.
        speaker_dim: if given, the norms are ``ConditionalLayerNorm`` on the speaker vector.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, kernel_size: int, dropout: float,
                 speaker_dim: Optional[int] = None) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, heads, dropout)
        self.conv1 = nn.Conv1d(dim, ffn_dim, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv1d(ffn_dim, dim, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)
        make_norm = (lambda: ConditionalLayerNorm(dim, speaker_dim)) if speaker_dim else (lambda: nn.LayerNorm(dim))
        self.norm1, self.norm2 = make_norm(), make_norm()
        self.conditional = speaker_dim is not None

    def _norm(self, norm: nn.Module, x: torch.Tensor, speaker: Optional[torch.Tensor]) -> torch.Tensor:
        return norm(x, speaker) if self.conditional else norm(x)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, speaker: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, T, D), mask (B, T) True on real positions -> (B, T, D), zero on padding."""
        pad = (~mask)[:, :, None]
        attended = self.attn(x, mask)
        x = self._norm(self.norm1, x + self.dropout(attended), speaker).masked_fill(pad, 0.0)
        hidden = self.conv2(self.dropout(F.relu(self.conv1(x.transpose(1, 2))))).transpose(1, 2)
        return self._norm(self.norm2, x + self.dropout(hidden), speaker).masked_fill(pad, 0.0)


class VariancePredictor(nn.Module):
    """Two conv + ReLU + layer-norm layers and a linear head: (B, L, D) -> (B, L)."""

    def __init__(self, dim: int, channels: int, kernel_size: int = 3, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(dim, channels, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.norm1(F.relu(self.conv1(x.transpose(1, 2))).transpose(1, 2)))
        h = self.dropout(self.norm2(F.relu(self.conv2(h.transpose(1, 2))).transpose(1, 2)))
        return self.head(h).squeeze(-1).masked_fill(~mask, 0.0)


class PostNet(nn.Module):
    """Residual convolutional refinement of a predicted log-mel (Tacotron 2, Shen et al., 2018).

    ``layers`` 1-D convolutions over time (kernel ``kernel_size``), each but the last followed by a
    layer norm over channels (not batch norm: statistics must not depend on the batch an adaptation
    step sees), tanh and dropout. The last convolution starts at zero, so an untrained postnet adds
    nothing and warm-starting a model without one is exact.
    """

    def __init__(self, n_mels: int, channels: int, layers: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        if layers < 2:
            raise ValueError(f"postnet_layers must be 0 (no postnet) or at least 2, got {layers}")
        sizes = [n_mels] + [channels] * (layers - 1) + [n_mels]
        self.convs = nn.ModuleList(nn.Conv1d(a, b, kernel_size, padding=kernel_size // 2)
                                   for a, b in zip(sizes[:-1], sizes[1:]))
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(layers - 1))
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.convs[-1].weight)
        nn.init.zeros_(self.convs[-1].bias)

    def forward(self, mel: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """mel (B, T, n_mels), frame_mask (B, T) True on real frames -> (B, T, n_mels) residual, zero on padding."""
        pad = (~frame_mask)[:, None, :]
        h = mel.transpose(1, 2)  # (B, n_mels, T)
        for conv, norm in zip(self.convs[:-1], self.norms):
            h = self.dropout(torch.tanh(norm(conv(h.masked_fill(pad, 0.0)).transpose(1, 2)).transpose(1, 2)))
        return self.convs[-1](h.masked_fill(pad, 0.0)).masked_fill(pad, 0.0).transpose(1, 2)


def regulate_length(x: torch.Tensor, durations: torch.Tensor, max_frames: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat token vectors by their durations.

    Args:
        x: (B, L, D) token vectors.
        durations: (B, L) non-negative integer frames per token.
        max_frames: pad/trim the output to this many frames.

    Returns:
        (B, T, D) frame vectors (zero past each item's length) and (B,) frame counts.
    """
    durations = durations.long()
    ends = durations.cumsum(dim=1)  # (B, L)
    lengths = ends[:, -1]
    t_max = max(1, int(lengths.max())) if max_frames is None else max_frames
    frames = torch.arange(t_max, device=x.device)[None].expand(x.shape[0], -1).contiguous()
    token = torch.searchsorted(ends, frames, right=True).clamp_max(x.shape[1] - 1)  # (B, T)
    out = torch.gather(x, 1, token[:, :, None].expand(-1, -1, x.shape[2]))
    return out.masked_fill(~lengths_to_mask(lengths, t_max)[:, :, None], 0.0), lengths


def average_over_durations(values: torch.Tensor, durations: torch.Tensor, nonzero_only: bool = True) -> torch.Tensor:
    """Mean of frame values (B, T) over each token's frames (B, L); 0 where a token has none."""
    ends = durations.long().cumsum(dim=1)
    starts = ends - durations.long()
    padded = F.pad(values, (1, 0))
    counted = (values != 0).float() if nonzero_only else torch.ones_like(values)
    sums = padded.cumsum(dim=1)
    counts = F.pad(counted, (1, 0)).cumsum(dim=1)
    total = sums.gather(1, ends) - sums.gather(1, starts)
    n = counts.gather(1, ends) - counts.gather(1, starts)
    return torch.where(n > 0, total / n.clamp_min(1), torch.zeros_like(total))


@dataclass
class ModelConfig:
    """Sizes and options of ``AcousticModel`` (the ``model`` config section; presets in conf/model/).

    Attributes:
        dim: model width.
        heads: attention heads.
        encoder_layers: FFT blocks in the encoder.
        decoder_layers: FFT blocks in the decoder (with conditional layer norm).
        ffn_dim: conv feed-forward channels.
        kernel_size: conv feed-forward kernel.
        dropout: dropout rate.
        speaker_dim: size of the speaker vector.
        predictor_channels: channels of the duration/pitch/energy predictors.
        aligner_channels: attention space of the aligner.
        aligner_temperature: distance scale of the aligner.
        prior_scale: beta-binomial prior scale (larger = more diagonal).
        postnet_layers: convolutions of a residual postnet after the decoder (0: none).
        postnet_channels: its hidden channels.
        postnet_kernel: its kernel size.
    """

    dim: int = 128
    heads: int = 2
    encoder_layers: int = 2
    decoder_layers: int = 2
    ffn_dim: int = 256
    kernel_size: int = 3
    dropout: float = 0.1
    speaker_dim: int = 64
    predictor_channels: int = 128
    aligner_channels: int = 80
    aligner_temperature: float = 0.0005
    prior_scale: float = 1.0
    postnet_layers: int = 0
    postnet_channels: int = 256
    postnet_kernel: int = 5


class AcousticModel(nn.Module):
    """Tokens + speaker vector -> log-mel, with jointly learned durations.

    Args:
        config: sizes and options (``ModelConfig``).
        n_symbols: size of the symbol table.
        n_mels: mel channels.
        pitch: predict and condition on per-token pitch (needs pitch features).
        energy: predict and condition on per-token energy (needs energy features).
    """

    def __init__(self, config: ModelConfig, n_symbols: int, n_mels: int = 80, pitch: bool = False,
                 energy: bool = False) -> None:
        super().__init__()
        c = config
        self.n_mels, self.dim, self.speaker_dim, self.prior_scale = n_mels, c.dim, c.speaker_dim, c.prior_scale
        self.embedding = nn.Embedding(n_symbols, c.dim, padding_idx=0)
        self.encoder = nn.ModuleList(FFTBlock(c.dim, c.heads, c.ffn_dim, c.kernel_size, c.dropout)
                                     for _ in range(c.encoder_layers))
        self.speaker_proj = nn.Linear(c.speaker_dim, c.dim)
        self.duration_predictor = VariancePredictor(c.dim, c.predictor_channels, dropout=c.dropout)
        self.pitch_predictor = VariancePredictor(c.dim, c.predictor_channels, dropout=c.dropout) if pitch else None
        self.pitch_embedding = nn.Conv1d(1, c.dim, 3, padding=1) if pitch else None
        self.energy_predictor = VariancePredictor(c.dim, c.predictor_channels, dropout=c.dropout) if energy else None
        self.energy_embedding = nn.Conv1d(1, c.dim, 3, padding=1) if energy else None
        self.decoder = nn.ModuleList(FFTBlock(c.dim, c.heads, c.ffn_dim, c.kernel_size, c.dropout, speaker_dim=c.speaker_dim)
                                     for _ in range(c.decoder_layers))
        self.mel_out = nn.Linear(c.dim, n_mels)
        self.postnet = (PostNet(n_mels, c.postnet_channels, c.postnet_layers, c.postnet_kernel, c.dropout)
                        if c.postnet_layers else None)
        self.aligner = AlignmentEncoder(n_mels, c.dim, c.aligner_channels, c.aligner_temperature)

    def speaker_parameter_names(self) -> list[str]:
        """Parameters that condition on the speaker: speaker projection + decoder conditional norms."""
        return [n for n, _ in self.named_parameters()
                if n.startswith("speaker_proj.") or (n.startswith("decoder.") and (".scale." in n or ".shift." in n))]

    def encode(self, tokens: torch.Tensor, token_mask: torch.Tensor, speaker: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings (B, L, D) and speaker-conditioned encoder output (B, L, D)."""
        emb = self.embedding(tokens)
        x = emb + sinusoids(tokens.shape[1], self.dim, tokens.device)[None]
        for block in self.encoder:
            x = block(x, token_mask)
        x = (x + self.speaker_proj(speaker)[:, None]).masked_fill(~token_mask[:, :, None], 0.0)
        return emb, x

    def attend(self, emb: torch.Tensor, token_lengths: torch.Tensor, token_mask: torch.Tensor, mels: torch.Tensor,
               mel_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The learned alignment of mel frames to tokens: soft attention (B, T, L), its log (B, T, L) and
        the monotonic hard alignment (B, T, L), given token embeddings ``emb`` (B, L, D)."""
        prior = beta_binomial_prior(token_lengths, mel_lengths, self.prior_scale)[:, : mels.shape[1]]
        soft, log_soft = self.aligner(mels, emb, token_mask, prior)
        return soft, log_soft, maximum_path(log_soft, token_lengths, mel_lengths)

    def hard_durations(self, tokens: torch.Tensor, token_lengths: torch.Tensor, mels: torch.Tensor,
                       mel_lengths: torch.Tensor) -> torch.Tensor:
        """(B, L) frames per token of the monotonic hard alignment of ``mels`` (B, T, n_mels) to ``tokens``
        (B, L): the durations a teacher-forced ``forward`` uses, computed without the encoder, the
        predictors or the decoder (the aligner sees only the token embeddings and the mels)."""
        token_mask = lengths_to_mask(token_lengths, tokens.shape[1])
        return self.attend(self.embedding(tokens), token_lengths, token_mask, mels, mel_lengths)[2].sum(dim=1)

    def forward(self, tokens: torch.Tensor, token_lengths: torch.Tensor, speaker: torch.Tensor,
                mels: Optional[torch.Tensor] = None, mel_lengths: Optional[torch.Tensor] = None,
                pitch: Optional[torch.Tensor] = None, energy: Optional[torch.Tensor] = None,
                pace: float = 1.0, durations: Optional[torch.Tensor] = None,
                token_hook: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> AcousticOutput:
        """Teacher-forced (``mels`` given: durations from the learned alignment) or free-running.

        Args:
            tokens: (B, L) token ids.
            token_lengths: (B,)
            speaker: (B, speaker_dim) speaker vectors.
            mels: (B, T, n_mels) targets for teacher forcing, or None to synthesise.
            mel_lengths: (B,) with ``mels``.
            pitch: (B, T) frame pitch (Hz, 0 unvoiced) with ``mels``, for the pitch predictor.
            energy: (B, T) frame energy with ``mels``, for the energy predictor.
            pace: speaking-rate factor when synthesising (2.0 = twice as fast).
            durations: (B, L) frames per token to use with ``mels`` instead of running the aligner
                (a MAML inner loop aligns its support set once, with the aligner it does not adapt).
            token_hook: (B, L, D) encoder output -> (B, L, D) added to it before the duration, pitch and
                energy predictors (per-phone conditioning, e.g. a memory read).
        """
        token_mask = lengths_to_mask(token_lengths, tokens.shape[1])
        emb, x = self.encode(tokens, token_mask, speaker)
        if token_hook is not None:
            x = x + token_hook(x).masked_fill(~token_mask[:, :, None], 0.0)
        log_durations = self.duration_predictor(x, token_mask)
        out = AcousticOutput(mel=x, mel_lengths=token_lengths, log_durations=log_durations, durations=log_durations)
        if mels is not None and durations is None:
            assert mel_lengths is not None
            out.attn_soft, out.attn_log, out.attn_hard = self.attend(emb, token_lengths, token_mask, mels, mel_lengths)
            durations = out.attn_hard.sum(dim=1)  # (B, L)
        elif durations is None:
            durations = torch.clamp(torch.round((torch.exp(log_durations) - 1) / pace), min=0)
            durations = durations.masked_fill(~token_mask, 0)
            durations[:, 0] = torch.where(durations.sum(1) == 0, torch.ones_like(durations[:, 0]), durations[:, 0])
        out.durations = durations
        x = self._add_variance(out, x, token_mask, durations, pitch, energy, teacher=mels is not None)
        frames, lengths = regulate_length(x, durations, mels.shape[1] if mels is not None else None)
        frame_mask = lengths_to_mask(lengths, frames.shape[1])
        h = frames + sinusoids(frames.shape[1], self.dim, frames.device)[None]
        for block in self.decoder:
            h = block(h, frame_mask, speaker)
        out.mel = self.mel_out(h).masked_fill(~frame_mask[:, :, None], 0.0)  # (B, T, n_mels)
        if self.postnet is not None:
            out.decoder_mel = out.mel
            out.mel = out.mel + self.postnet(out.mel, frame_mask)
        out.mel_lengths = lengths
        return out

    def _add_variance(self, out: AcousticOutput, x: torch.Tensor, token_mask: torch.Tensor, durations: torch.Tensor,
                      pitch: Optional[torch.Tensor], energy: Optional[torch.Tensor], teacher: bool) -> torch.Tensor:
        """Predict per-token pitch/energy and add their embeddings (targets when teacher-forced)."""
        for name, predictor, embed, frames in (("pitch", self.pitch_predictor, self.pitch_embedding, pitch),
                                               ("energy", self.energy_predictor, self.energy_embedding, energy)):
            if predictor is None:
                continue
            predicted = predictor(x, token_mask)
            setattr(out, name, predicted)
            value = predicted
            if teacher and frames is not None:
                target = average_over_durations(torch.log1p(frames.clamp_min(0)), durations)
                setattr(out, f"{name}_target", target)
                value = target
            x = x + embed(value[:, None]).transpose(1, 2).masked_fill(~token_mask[:, :, None], 0.0)
        return x
