"""Summary statistics of per-utterance scores."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95 % confidence half-width (normal approximation) of the finite values; NaN values
    are failures, counted and left out."""
    finite = [v for v in values if math.isfinite(v)]
    n = len(finite)
    mean = float(np.mean(finite)) if n else float("nan")
    ci = float(1.96 * np.std(finite, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "ci95": ci, "n": n, "failures": len(values) - n, "values": [float(v) for v in values]}


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
