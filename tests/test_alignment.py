"""Alignment pieces against brute force and hand-computed values."""
import itertools

import numpy as np
import pytest
import torch

from lightning_tts.models.acoustic import average_over_durations, regulate_length
from lightning_tts.models.alignment import ForwardSumLoss, beta_binomial_prior, binarization_loss, maximum_path


def _best_monotonic(scores: np.ndarray) -> float:
    """Brute force: best sum over all monotonic alignments that give every token >= 1 frame."""
    n_t, n_l = scores.shape
    best = -np.inf
    for cuts in itertools.combinations(range(1, n_t), n_l - 1):
        bounds = (0, *cuts, n_t)
        best = max(best, sum(scores[bounds[k]: bounds[k + 1], k].sum() for k in range(n_l)))
    return best


@pytest.mark.parametrize("seed", range(4))
def test_maximum_path_is_optimal_monotonic_and_covers_tokens(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    tl, ml = torch.tensor([5, 3, 4]), torch.tensor([11, 7, 4])
    log_soft = torch.randn(3, 11, 5, generator=g).log_softmax(-1)
    log_soft = log_soft.masked_fill(torch.arange(5)[None, None] >= tl[:, None, None], float("-inf"))
    hard = maximum_path(log_soft, tl, ml)
    for b in range(3):
        n_t, n_l = int(ml[b]), int(tl[b])
        path = hard[b, :n_t, :n_l]
        assert (path.sum(1) == 1).all() and (path.sum(0) >= 1).all()  # one token per frame, every token used
        tokens = path.argmax(1)
        assert (tokens[1:] - tokens[:-1] >= 0).all() and (tokens[1:] - tokens[:-1] <= 1).all()
        assert hard[b, n_t:].sum() == 0 and hard[b, :, n_l:].sum() == 0
        got = float((path.double() * log_soft[b, :n_t, :n_l].double()).sum())
        assert got == pytest.approx(_best_monotonic(log_soft[b, :n_t, :n_l].double().numpy()), abs=1e-6)


def test_forward_sum_prefers_the_diagonal() -> None:
    t, l = 12, 4
    diagonal = torch.full((1, t, l), -8.0)
    for frame in range(t):
        diagonal[0, frame, frame * l // t] = 0.0
    reverse = diagonal.flip(-1)
    loss = ForwardSumLoss()
    lengths = (torch.tensor([l]), torch.tensor([t]))
    assert loss(diagonal.log_softmax(-1), *lengths) < 0.2 * loss(reverse.log_softmax(-1), *lengths)


def test_prior_is_a_distribution_over_tokens_and_diagonal() -> None:
    prior = beta_binomial_prior(torch.tensor([6]), torch.tensor([30])).exp()[0]
    assert torch.allclose(prior.sum(1), torch.ones(30), atol=1e-5)
    peaks = prior.argmax(1)
    assert peaks[0] == 0 and peaks[-1] == 5 and (peaks[1:] >= peaks[:-1]).all()


def test_binarization_loss_is_zero_when_soft_equals_hard() -> None:
    hard = torch.eye(4)[None]
    assert binarization_loss(hard, hard).item() == pytest.approx(0.0, abs=1e-6)
    assert binarization_loss(hard, torch.full_like(hard, 0.25)).item() == pytest.approx(np.log(4), rel=1e-5)


def test_regulate_length_and_token_averages() -> None:
    x = torch.arange(3.0)[None, :, None].repeat(1, 1, 2)  # tokens 0, 1, 2
    durations = torch.tensor([[2, 0, 3]])
    frames, lengths = regulate_length(x, durations)
    assert lengths.tolist() == [5] and frames[0, :, 0].tolist() == [0, 0, 2, 2, 2]
    values = torch.tensor([[1.0, 3.0, 0.0, 4.0, 8.0]])
    assert average_over_durations(values, durations).tolist() == [[2.0, 0.0, 6.0]]  # zeros (unvoiced) skipped
