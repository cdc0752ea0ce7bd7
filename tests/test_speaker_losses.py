"""Metric-learning losses on hand-made batches (the triplets they pick, their values) and the speaker encoder."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_tts.models.speaker_encoder import SpeakerEncoder, SpeakerEncoderConfig
from lightning_tts.models.speaker_losses import GE2ELoss, contrastive_loss, pairwise_distances, triplet_loss


def points(*angles_deg: float) -> torch.Tensor:
    """Unit vectors in the plane at the given angles: distances are easy to compute by hand."""
    a = torch.tensor(angles_deg, dtype=torch.float64) * math.pi / 180
    return torch.stack([torch.cos(a), torch.sin(a)], dim=1)


def chord(deg: float) -> float:
    """Euclidean distance between two unit vectors ``deg`` degrees apart."""
    return 2 * math.sin(math.radians(deg) / 2)


# speaker 0 at 0 and 40 degrees, speaker 1 at 60 and 180 degrees
EMB = points(0, 40, 60, 180)
LABELS = torch.tensor([0, 0, 1, 1])


def as_set(triplets: torch.Tensor) -> set[tuple[int, int, int]]:
    return {tuple(t) for t in triplets.tolist()}


def test_pairwise_distances_are_chords() -> None:
    d = pairwise_distances(EMB)
    assert d[0, 1] == pytest.approx(chord(40)) and d[2, 3] == pytest.approx(chord(120))
    assert torch.all(d.diagonal() == 0)


def test_batch_hard_picks_farthest_positive_and_closest_negative() -> None:
    result = triplet_loss(EMB, LABELS, margin=0.2, mining="batch_hard")
    # anchor 0: p=1 (40), closest negative 2 (60); anchor 1: p=0, n=2 (20); anchor 2: p=3, n=1 (20);
    # anchor 3: p=2 (120), closest negative 1 (140 degrees) vs 0 (180): 1
    assert as_set(result.triplets) == {(0, 1, 2), (1, 0, 2), (2, 3, 1), (3, 2, 1)}
    expected = [max(0.0, chord(ap) - chord(an) + 0.2) for ap, an in ((40, 60), (40, 20), (120, 20), (120, 140))]
    assert float(result.loss) == pytest.approx(sum(expected) / 4)


def test_semi_hard_picks_the_closest_negative_beyond_the_positive() -> None:
    result = triplet_loss(EMB, LABELS, margin=0.2, mining="semi_hard")
    # (0,1): d_ap=40deg; negatives at 60 and 180 -> the closest beyond 40 is 2 (60)
    # (1,0): d_ap=40; negatives at 20 (inside) and 140 -> 3
    # (2,3): d_ap=120; negatives at 60 (0) and 20 (1), none beyond -> the farthest, 0
    # (3,2): d_ap=120; negatives at 180 (0) and 140 (1) -> the closest beyond: 1
    assert as_set(result.triplets) == {(0, 1, 2), (1, 0, 3), (2, 3, 0), (3, 2, 1)}
    expected = [max(0.0, chord(ap) - chord(an) + 0.2) for ap, an in ((40, 60), (40, 140), (120, 60), (120, 140))]
    assert float(result.loss) == pytest.approx(sum(expected) / 4)


def test_batch_all_averages_the_active_triplets() -> None:
    result = triplet_loss(EMB, LABELS, margin=0.2, mining="all")
    angle = {(0, 1): 40, (0, 2): 60, (0, 3): 180, (1, 2): 20, (1, 3): 140, (2, 3): 120}
    ang = lambda i, j: angle[(min(i, j), max(i, j))]  # noqa: E731
    every = [(a, p, n) for a in range(4) for p in range(4) for n in range(4)
             if a != p and LABELS[a] == LABELS[p] and LABELS[a] != LABELS[n]]
    values = {t: chord(ang(t[0], t[1])) - chord(ang(t[0], t[2])) + 0.2 for t in every}
    active = {t for t, v in values.items() if v > 0}
    assert as_set(result.triplets) == active and 0 < len(active) < len(every)
    assert float(result.loss) == pytest.approx(sum(values[t] for t in active) / len(active))


def test_contrastive_loss_by_hand() -> None:
    loss = contrastive_loss(EMB, LABELS, margin=1.0)
    pos = (chord(40) ** 2 + chord(120) ** 2) / 2
    neg = sum(max(0.0, 1.0 - chord(a)) ** 2 for a in (60, 180, 20, 140)) / 4
    assert float(loss) == pytest.approx(0.5 * (pos + neg))


def test_ge2e_matches_a_loop_over_utterances() -> None:
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(9, 5, dtype=torch.float64), dim=1)
    labels = torch.tensor([3, 3, 3, 7, 7, 7, 1, 1, 1])
    ge2e = GE2ELoss(init_w=4.0, init_b=-1.0).double()
    total = 0.0
    for i in range(9):
        logits = []
        for k in (1, 3, 7):  # torch.unique order
            members = [j for j in range(9) if labels[j] == k and j != i]
            centroid = emb[members].mean(0)
            logits.append(4.0 * float(F.cosine_similarity(emb[i], centroid, dim=0)) - 1.0)
        target = [1, 3, 7].index(int(labels[i]))
        total += -logits[target] + math.log(sum(math.exp(x) for x in logits))
    assert float(ge2e(emb, labels).detach()) == pytest.approx(total / 9)
    with pytest.raises(ValueError, match="at least 2 utterances"):
        ge2e(emb[:4], labels[:4])


def test_losses_have_gradients_and_are_zero_for_separated_speakers() -> None:
    emb = points(0, 1, 180, 181).float().requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1])
    assert float(triplet_loss(emb, labels, margin=0.5, mining="batch_hard").loss) == 0.0
    loss = triplet_loss(EMB.float().requires_grad_(True), LABELS, mining="all").loss
    loss.backward()


def test_speaker_encoder_ignores_padding_and_averages_windows() -> None:
    torch.manual_seed(0)
    enc = SpeakerEncoder(20, SpeakerEncoderConfig(channels=16, layers=2, dim=8, window=32)).eval()
    mel = torch.randn(50, 20)
    padded = torch.cat([mel, torch.randn(30, 20)])[None]  # garbage past the length
    one = enc(mel[None], torch.tensor([50]))
    assert torch.allclose(enc(padded, torch.tensor([50])), one, atol=1e-5)
    assert torch.allclose(one.norm(dim=-1), torch.ones(1))
    windows = enc.windows(mel)
    assert windows.shape == (3, 32, 20)  # starts 0, 16 and the tail 18
    by_hand = F.normalize(enc(windows, torch.tensor([32, 32, 32])).mean(0), dim=0)
    assert torch.allclose(enc.embed(padded, torch.tensor([50]))[0], by_hand, atol=1e-5)
    short = torch.randn(20, 20)
    assert torch.allclose(enc.embed(short[None], torch.tensor([20])), enc(short[None], torch.tensor([20])), atol=1e-5)
    crops, lengths = enc.random_crop(padded, torch.tensor([50]))
    assert crops.shape == (1, 32, 20) and int(lengths[0]) == 32
