"""Learned text-mel alignment: soft attention, forward-sum loss, monotonic alignment search.

The recipe of "One TTS Alignment to Rule Them All" (Badlani et al., 2022), as NeMo's FastPitch uses
it: an ``AlignmentEncoder`` scores every (mel frame, token) pair by a scaled L2 distance between
projected mels and projected token embeddings, plus a beta-binomial prior that favours the diagonal
early in training. ``ForwardSumLoss`` maximises the likelihood of all monotonic alignments (a CTC
loss with one label per token); ``maximum_path`` (monotonic alignment search, Kim et al., 2020)
extracts the best hard alignment, whose column sums are the token durations; ``binarization_loss``
pulls the soft attention towards the hard one.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import betabinom
from torch import nn


class AlignmentEncoder(nn.Module):
    """Soft attention of mel frames over tokens.

    Args:
        n_mels: mel channels of the query.
        text_dim: channels of the token embeddings (keys).
        channels: attention space size.
        temperature: scale of the negative squared distance.
    """

    def __init__(self, n_mels: int, text_dim: int, channels: int = 80, temperature: float = 0.0005) -> None:
        super().__init__()
        self.temperature = temperature
        self.key_proj = nn.Sequential(
            nn.Conv1d(text_dim, 2 * text_dim, 3, padding=1), nn.ReLU(), nn.Conv1d(2 * text_dim, channels, 1))
        self.query_proj = nn.Sequential(
            nn.Conv1d(n_mels, 2 * n_mels, 3, padding=1), nn.ReLU(), nn.Conv1d(2 * n_mels, n_mels, 1), nn.ReLU(),
            nn.Conv1d(n_mels, channels, 1))

    def forward(self, mels: torch.Tensor, text: torch.Tensor, token_mask: torch.Tensor,
                log_prior: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention of each frame over tokens.

        Args:
            mels: (B, T, n_mels) target mels.
            text: (B, L, text_dim) token embeddings.
            token_mask: (B, L) True on real tokens.
            log_prior: (B, T, L) log of an alignment prior, or None.

        Returns:
            soft: (B, T, L) attention, each frame a distribution over real tokens.
            log_soft: (B, T, L) its log (``-inf`` on padding), the input of the forward-sum loss.
        """
        keys = self.key_proj(text.transpose(1, 2))  # (B, C, L)
        queries = self.query_proj(mels.transpose(1, 2))  # (B, C, T)
        dist = (queries[:, :, :, None] - keys[:, :, None, :]).pow(2).sum(1)  # (B, T, L)
        scores = -self.temperature * dist
        log_soft = F.log_softmax(scores, dim=-1)
        if log_prior is not None:
            log_soft = log_soft + log_prior
        log_soft = log_soft.masked_fill(~token_mask[:, None, :], float("-inf"))
        log_soft = F.log_softmax(log_soft, dim=-1)
        return log_soft.exp(), log_soft


def beta_binomial_prior(token_lengths: torch.Tensor, mel_lengths: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Log of the beta-binomial alignment prior (Badlani et al., 2022), (B, T_max, L_max), 0 on padding.

    Frame t of T attends to token k of L with probability BetaBinom(k; L-1, a=scale*(t+1), b=scale*(T-t)).
    """
    t_max, l_max = int(mel_lengths.max()), int(token_lengths.max())
    out = np.zeros((len(token_lengths), t_max, l_max), dtype=np.float32)
    for b, (n_tok, n_mel) in enumerate(zip(token_lengths.tolist(), mel_lengths.tolist())):
        k = np.arange(n_tok)
        t = np.arange(1, n_mel + 1)[:, None]
        out[b, :n_mel, :n_tok] = betabinom.logpmf(k[None, :], n_tok - 1, scale * t, scale * (n_mel + 1 - t))
    return torch.from_numpy(out).to(token_lengths.device).clamp_min(-1e4)


class ForwardSumLoss(nn.Module):
    """Negative log-likelihood of all monotonic alignments, as CTC with tokens 1..L in order.

    Args:
        blank_logprob: log-score of the CTC blank, prepended to every frame's scores.
    """

    def __init__(self, blank_logprob: float = -1.0) -> None:
        super().__init__()
        self.blank_logprob = blank_logprob

    def forward(self, log_soft: torch.Tensor, token_lengths: torch.Tensor, mel_lengths: torch.Tensor) -> torch.Tensor:
        """Args: log_soft (B, T, L) from ``AlignmentEncoder``; token_lengths (B,); mel_lengths (B,).

        Returns:
            scalar loss: the mean over the batch of the per-item CTC loss divided by its token count.
        """
        padded = F.pad(log_soft, (1, 0), value=self.blank_logprob)  # (B, T, L+1), class 0 = blank
        padded = padded.masked_fill(torch.isinf(padded), -1e4)
        log_probs = F.log_softmax(padded, dim=-1).transpose(0, 1)  # (T, B, L+1)
        targets = torch.arange(1, log_soft.shape[2] + 1, device=log_soft.device).expand(log_soft.shape[0], -1)
        if log_probs.dtype in (torch.float16, torch.bfloat16):  # CTC needs at least single precision
            log_probs = log_probs.float()
        return F.ctc_loss(log_probs, targets, mel_lengths, token_lengths, blank=0, reduction="mean", zero_infinity=True)


@torch.no_grad()
def maximum_path(log_soft: torch.Tensor, token_lengths: torch.Tensor, mel_lengths: torch.Tensor) -> torch.Tensor:
    """Monotonic alignment search: the best hard alignment under ``log_soft``.

    Every frame is assigned to exactly one token, token indices never decrease with time, every
    token gets at least one frame, the first frame goes to token 0 and the last to token L-1
    (requires T >= L; otherwise the trailing tokens receive no frame).

    Args:
        log_soft: (B, T, L) log attention.
        token_lengths: (B,)
        mel_lengths: (B,)

    Returns:
        (B, T, L) 0/1 alignment.
    """
    scores = np.nan_to_num(log_soft.detach().double().cpu().numpy(), neginf=-1e9)  # (B, T, L)
    b_size, t_max, l_max = scores.shape
    n_t, n_l = mel_lengths.cpu().numpy(), token_lengths.cpu().numpy()
    neg = -1e9
    value = np.full((b_size, t_max, l_max), neg)
    value[:, 0, 0] = scores[:, 0, 0]
    for t in range(1, t_max):  # vectorised over batch and tokens: stay on token k, or advance from k-1
        prev = value[:, t - 1]
        advance = np.concatenate((np.full((b_size, 1), neg), prev[:, :-1]), axis=1)
        value[:, t] = np.maximum(prev, advance) + scores[:, t]
    out = np.zeros_like(scores, dtype=np.float32)
    rows = np.arange(b_size)
    k = n_l - 1
    for t in range(t_max - 1, -1, -1):  # backtrack from each item's last frame and last token
        active = t < n_t
        out[rows[active], t, k[active]] = 1.0
        if t == 0:
            break
        prev_k = np.maximum(k - 1, 0)
        move = active & (k > 0) & ((k == t) | (value[rows, t - 1, prev_k] > value[rows, t - 1, k]))
        k = k - move.astype(k.dtype)
    return torch.from_numpy(out).to(log_soft.device)


def binarization_loss(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """-mean log soft attention on the hard path: pulls the soft alignment onto the hard one.

    Args: hard (B, T, L) 0/1; soft (B, T, L).
    """
    return -(torch.log(soft.clamp_min(1e-12)) * hard).sum() / hard.sum().clamp_min(1.0)
