"""Summary statistics of per-utterance scores."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95 % confidence half-width (normal approximation) of the finite values; NaN values
    are failures, counted and left out."""
    finite = [v for v in values if math.isfinite(v)]
    n = len(finite)
    mean = float(np.mean(finite)) if n else float("nan")
    ci = float(1.96 * np.std(finite, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "ci95": ci, "n": n, "failures": len(values) - n, "values": [float(v) for v in values]}


def format_mean_ci(cell: dict[str, Any]) -> str:
    """'mean ± ci' of a ``mean_ci`` cell (the mean alone when the CI is undefined), with its failure count."""
    text = f"{cell['mean']:.3f} ± {cell['ci95']:.3f}" if math.isfinite(cell["ci95"]) else f"{cell['mean']:.3f}"
    return text + (f" ({cell['failures']} failed)" if cell["failures"] else "")
