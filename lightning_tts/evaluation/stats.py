"""Summary statistics of per-utterance scores."""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95 % confidence half-width (normal approximation) of the finite values; NaN values
    are failures, counted and left out."""
    finite = [v for v in values if math.isfinite(v)]
    n = len(finite)
    mean = float(np.mean(finite)) if n else float("nan")
    ci = float(1.96 * np.std(finite, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "ci95": ci, "n": n, "failures": len(values) - n, "values": [float(v) for v in values]}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], clusters: Sequence[str], resamples: int = 2000,
                     seed: int = 0) -> dict[str, Any]:
    """Mean of the paired differences ``b - a`` and its 95 % percentile CI from a cluster bootstrap:
    clusters (speakers) are drawn with replacement and each keeps all its pairs, so queries of one
    speaker are not counted as independent evidence. Pairs with a NaN on either side are dropped.

    Args:
        a, b: per-item scores of two systems on the same items, in the same order.
        clusters: the cluster (speaker) of each item.
        resamples: bootstrap draws.
        seed: of the draws.

    Returns:
        ``mean``, ``ci_low``, ``ci_high`` (NaN when fewer than 2 clusters remain), ``n``, ``clusters``.
    """
    if not len(a) == len(b) == len(clusters):
        raise ValueError(f"paired_bootstrap needs equal lengths, got {len(a)}, {len(b)}, {len(clusters)}")
    keep = [i for i in range(len(a)) if math.isfinite(a[i]) and math.isfinite(b[i])]
    names = sorted({clusters[i] for i in keep})
    sums = np.array([sum(b[i] - a[i] for i in keep if clusters[i] == c) for c in names])  # (C,)
    counts = np.array([sum(1 for i in keep if clusters[i] == c) for c in names])  # (C,)
    mean = float(sums.sum() / counts.sum()) if keep else float("nan")
    low = high = float("nan")
    if len(names) > 1:
        draws = np.random.default_rng(seed).integers(len(names), size=(resamples, len(names)))  # (R, C)
        means = sums[draws].sum(1) / counts[draws].sum(1)  # (R,)
        low, high = (float(v) for v in np.percentile(means, [2.5, 97.5]))
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": len(keep), "clusters": len(names)}


#: A checkpoint's adaptation rate: None (the learner's own), one rate, or one per adaptation step count.
Rate = Union[None, float, Mapping[int, Optional[float]]]


def rate_at(rate: Rate, steps: int) -> Optional[float]:
    """The rate to adapt with for ``steps`` steps (None: the learner's own).

    Raises:
        KeyError: a per-step-count ``rate`` without ``steps``.
    """
    return rate[steps] if isinstance(rate, Mapping) else rate


def format_rate(rate: Any) -> str:
    """A rate as reports show it: 'of the learner', '0.01', or '0 steps: of the learner, 20 steps: 0.03'
    (a per-step-count rate, as ``results.json`` stores it: keys may be strings)."""
    if isinstance(rate, Mapping):
        return ", ".join(f"{k} steps: {format_rate(v)}" for k, v in rate.items())
    return "of the learner" if rate is None else f"{rate:g}"


def format_cost(cost: Optional[dict[str, Any]]) -> str:
    """A checkpoint's ``training_cost`` in one phrase (``callbacks.cost``), or 'cost not recorded'."""
    if not cost:
        return "cost not recorded"
    prior = f" (+{cost['prior_steps']} warm-start)" if cost.get("prior_steps") else ""
    return (f"{cost['optimizer_steps']} optimiser steps{prior}, {cost['utterances_seen']} utterances seen, "
            f"{cost['wall_seconds']:.0f} s on {cost['device']} x {cost['world_size']}")


def format_mean_ci(cell: dict[str, Any]) -> str:
    """'mean ± ci' of a ``mean_ci`` cell (the mean alone when the CI is undefined), with its failure count."""
    text = f"{cell['mean']:.3f} ± {cell['ci95']:.3f}" if math.isfinite(cell["ci95"]) else f"{cell['mean']:.3f}"
    return text + (f" ({cell['failures']} failed)" if cell["failures"] else "")
