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
