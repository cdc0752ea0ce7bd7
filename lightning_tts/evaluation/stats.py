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
    One run on each side of ``paired_bootstrap_runs``.

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
    return paired_bootstrap_runs([a], [b], clusters, resamples, seed)


def paired_bootstrap_runs(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], clusters: Sequence[str],
                          resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Paired difference of two *recipes*, each scored by one or more runs (e.g. training seeds) on the
    same items: the mean over items of (mean of b's runs - mean of a's runs), and a 95 % percentile CI
    from a bootstrap that draws clusters (speakers) with replacement and, for a side with more than one
    run, that side's runs with replacement too (one run draw per resample, shared by every cluster:
    a run's effect is common to all speakers). So the interval covers run-to-run spread as well as
    speaker-to-speaker spread; with one run per side it is ``paired_bootstrap``. Items with a NaN in any
    run of either side are dropped.

    Args:
        a, b: (runs, items) per-item scores of each run of the two recipes, items in the same order.
        clusters: the cluster (speaker) of each item.
        resamples: bootstrap draws.
        seed: of the draws.

    Returns:
        ``mean``, ``ci_low``, ``ci_high`` (NaN when fewer than 2 clusters remain), ``n``, ``clusters``,
        ``runs`` ([runs of a, runs of b]).
    """
    a_runs, b_runs = np.asarray(a, dtype=float), np.asarray(b, dtype=float)  # (Ra, N), (Rb, N)
    if (a_runs.ndim != 2 or b_runs.ndim != 2 or not len(a_runs) or not len(b_runs)
            or not a_runs.shape[1] == b_runs.shape[1] == len(clusters)):
        raise ValueError(f"paired_bootstrap_runs needs (runs, items) scores of equal item counts and one cluster per "
                         f"item, got {a_runs.shape}, {b_runs.shape}, {len(clusters)} clusters")
    keep = np.isfinite(a_runs).all(axis=0) & np.isfinite(b_runs).all(axis=0)  # (N,)
    names = sorted({clusters[i] for i in np.flatnonzero(keep)})
    member = np.array([[bool(keep[i]) and clusters[i] == c for i in range(len(clusters))] for c in names],
                      dtype=float).reshape(len(names), len(clusters))  # (C, N)
    a_sums = np.where(keep, a_runs, 0.0) @ member.T  # (Ra, C): each run's sum over each cluster's items
    b_sums = np.where(keep, b_runs, 0.0) @ member.T  # (Rb, C)
    counts = member.sum(axis=1)  # (C,)
    sums = b_sums.mean(axis=0) - a_sums.mean(axis=0)  # (C,)
    mean = float(sums.sum() / counts.sum()) if keep.any() else float("nan")
    low = high = float("nan")
    if len(names) > 1:
        rng = np.random.default_rng(seed)
        draws = rng.integers(len(names), size=(resamples, len(names)))  # (R, C)

        def drawn(run_sums: np.ndarray) -> np.ndarray:
            """(R, C) each draw's mean cluster sums over its runs, drawn with replacement (one run: as is)."""
            if len(run_sums) == 1:
                return np.broadcast_to(run_sums[0], (resamples, len(names)))
            return run_sums[rng.integers(len(run_sums), size=(resamples, len(run_sums)))].mean(axis=1)

        a_drawn = drawn(a_sums)  # a's runs are drawn before b's
        per_draw = drawn(b_sums) - a_drawn  # (R, C)
        means = np.take_along_axis(per_draw, draws, axis=1).sum(axis=1) / counts[draws].sum(axis=1)  # (R,)
        low, high = (float(v) for v in np.percentile(means, [2.5, 97.5]))
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": int(keep.sum()), "clusters": len(names),
            "runs": [len(a_runs), len(b_runs)]}


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
