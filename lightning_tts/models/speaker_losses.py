"""Metric-learning losses over a batch of embeddings with speaker labels.

Every loss takes ``embeddings`` (B, D) (unit length) and integer ``labels`` (B,) and looks only at
the batch it is given: under DDP each rank mines within its own N speakers x M utterances.

- ``contrastive_loss``: the siamese loss of Hadsell, Chopra & LeCun (2006) over every pair.
- ``triplet_loss``: FaceNet's margin loss (Schroff et al., 2015) with batch-all, batch-hard
  (Hermans et al., 2017) or semi-hard (FaceNet; TensorFlow Addons' selection rule) mining.
- ``GE2ELoss``: the generalized end-to-end softmax loss (Wan et al., 2018) with learned scale/bias.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MINING = ("all", "batch_hard", "semi_hard")


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B) Euclidean distances (zero diagonal; gradient-safe at 0)."""
    sq = (embeddings[:, None] - embeddings[None]).pow(2).sum(-1)  # (B, B)
    eye = torch.eye(len(embeddings), dtype=torch.bool, device=embeddings.device)
    return torch.sqrt(sq.masked_fill(eye, 1.0).clamp_min(1e-12)).masked_fill(eye, 0.0)


def _label_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive (B, B): same label, not self; negative (B, B): different label)."""
    same = labels[:, None] == labels[None]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Siamese contrastive loss over every unordered pair.

    ``L = mean_pos d^2 / 2 + mean_neg max(0, margin - d)^2 / 2``: positive and negative pairs are
    averaged separately (an N x M batch has far more negative pairs), then added.
    """
    dist = pairwise_distances(embeddings)
    pos, neg = _label_masks(labels)
    upper = torch.ones_like(pos).triu(diagonal=1)
    pos, neg = pos & upper, neg & upper
    pos_term = dist[pos].pow(2).mean() if pos.any() else dist.sum() * 0
    neg_term = F.relu(margin - dist[neg]).pow(2).mean() if neg.any() else dist.sum() * 0
    return 0.5 * (pos_term + neg_term)


@dataclass
class TripletResult:
    """A triplet loss and the triplets it used.

    Attributes:
        loss: scalar.
        triplets: (n, 3) rows of (anchor, positive, negative) batch indices.
    """

    loss: torch.Tensor
    triplets: torch.Tensor


def triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.3,
                 mining: str = "batch_hard") -> TripletResult:
    """Triplet margin loss ``max(0, d(a, p) - d(a, n) + margin)`` with Euclidean d.

    Mining:
        - ``all``: every valid (a, p, n); the loss is the mean over the triplets with a positive loss
          (Hermans et al.'s "batch all"); those are the returned triplets.
        - ``batch_hard``: per anchor, its farthest positive and closest negative; mean over anchors.
        - ``semi_hard``: per (a, p) pair, the closest negative farther than p
          (``d(a, p) < d(a, n)``); if there is none, the farthest negative. Mean over pairs.

    Raises:
        ValueError: unknown ``mining``.
    """
    if mining not in MINING:
        raise ValueError(f"mining must be one of {MINING}, got {mining!r}")
    dist = pairwise_distances(embeddings)  # (B, B)
    pos, neg = _label_masks(labels)
    inf = torch.finfo(dist.dtype).max
    if mining == "batch_hard":
        anchors = torch.nonzero(pos.any(1) & neg.any(1)).squeeze(1)
        p = dist.masked_fill(~pos, -1.0)[anchors].argmax(1)
        n = dist.masked_fill(~neg, inf)[anchors].argmin(1)
        triplets = torch.stack([anchors, p, n], dim=1)
    elif mining == "semi_hard":
        a, p = torch.nonzero(pos, as_tuple=True)
        d_ap = dist[a, p][:, None]  # (P, 1)
        d_an = dist[a]  # (P, B)
        farther = neg[a] & (d_an > d_ap)
        outside = d_an.masked_fill(~farther, inf).argmin(1)
        inside = d_an.masked_fill(~neg[a], -1.0).argmax(1)
        n = torch.where(farther.any(1), outside, inside)
        keep = neg[a].any(1)
        triplets = torch.stack([a, p, n], dim=1)[keep]
    else:
        valid = pos[:, :, None] & neg[:, None, :]  # (a, p, n)
        values = dist[:, :, None] - dist[:, None, :] + margin
        triplets = torch.nonzero(valid & (values > 0))
        if len(triplets) == 0:
            return TripletResult(dist.sum() * 0, triplets)
        a, p, n = triplets.unbind(1)
        return TripletResult(values[a, p, n].mean(), triplets)
    if len(triplets) == 0:
        return TripletResult(dist.sum() * 0, triplets)
    a, p, n = triplets.unbind(1)
    return TripletResult(F.relu(dist[a, p] - dist[a, n] + margin).mean(), triplets)


class GE2ELoss(nn.Module):
    """Generalized end-to-end softmax loss (Wan et al., 2018).

    ``S[i, k] = w * cos(e_i, c_k) + b`` against every speaker centroid ``c_k`` in the batch, where
    the utterance's own speaker centroid leaves the utterance out (``c_j^(-i)``); the loss is the
    cross-entropy of ``S[i, :]`` with the true speaker. ``w`` (kept > 0) and ``b`` are learned,
    initialised to 10 and -5 as in the paper.
    """

    def __init__(self, init_w: float = 10.0, init_b: float = -5.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(init_w)))
        self.b = nn.Parameter(torch.tensor(float(init_b)))

    def similarity(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K) scaled similarities to the K speakers of the batch, and (B,) target column.

        Raises:
            ValueError: a speaker with a single utterance (no leave-one-out centroid).
        """
        speakers, target = torch.unique(labels, return_inverse=True)  # (K,), (B,)
        onehot = F.one_hot(target, len(speakers)).to(embeddings.dtype)  # (B, K)
        counts = onehot.sum(0)  # (K,)
        if bool((counts < 2).any()):
            raise ValueError("GE2E needs at least 2 utterances per speaker in a batch")
        sums = onehot.T @ embeddings  # (K, D)
        centroids = sums / counts[:, None]
        own = (sums[target] - embeddings) / (counts[target] - 1)[:, None]  # (B, D) leave-one-out
        cos = F.normalize(embeddings, dim=-1) @ F.normalize(centroids, dim=-1).T  # (B, K)
        own_cos = F.cosine_similarity(embeddings, own, dim=-1)  # (B,)
        cos = torch.where(onehot.bool(), own_cos[:, None].expand_as(cos), cos)
        return self.w.clamp_min(1e-6) * cos + self.b, target

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        scores, target = self.similarity(embeddings, labels)
        return F.cross_entropy(scores, target)
