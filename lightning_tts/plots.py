"""Figures: predicted vs target mel with the learned alignment; few-shot adaptation curves.

matplotlib is imported lazily with the Agg backend, so plotting works on headless nodes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from lightning_tts.atomic import atomic_path


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mel_alignment_figure(predicted: torch.Tensor, target: torch.Tensor, alignment: Optional[torch.Tensor] = None,
                         title: str = "") -> Any:
    """Predicted (T, n_mels) over target (T, n_mels) mel, and the (T, L) alignment if given."""
    plt = pyplot()
    rows = 3 if alignment is not None else 2
    fig, axes = plt.subplots(rows, 1, figsize=(10, 2.6 * rows), constrained_layout=True)
    vmin, vmax = float(target.min()), float(target.max())
    for ax, mel, name in ((axes[0], predicted, "predicted"), (axes[1], target, "target")):
        im = ax.imshow(mel.float().T.cpu().numpy(), origin="lower", aspect="auto", vmin=vmin, vmax=vmax,
                       interpolation="none")
        ax.set_ylabel("mel bin")
        ax.set_title(f"{name} log-mel")
        fig.colorbar(im, ax=ax)
    if alignment is not None:
        im = axes[2].imshow(alignment.float().T.cpu().numpy(), origin="lower", aspect="auto", interpolation="none")
        axes[2].set_ylabel("token")
        axes[2].set_title("learned alignment")
        fig.colorbar(im, ax=axes[2])
    axes[-1].set_xlabel("frame")
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write a figure as PNG atomically and close it."""
    plt = pyplot()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return target


def adaptation_curves_figure(results: Mapping[str, Any], metrics: Sequence[str],
                             lower_is_better: Mapping[str, bool]) -> Any:
    """Metric vs adaptation steps from ``evaluate``'s results: one line per (system, shots), with 95 % CI
    bars; the reference rows (ground truth, vocoder ceiling) as grey horizontal lines."""
    plt = pyplot()
    rows = results["rows"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 4.2), constrained_layout=True)
    systems = list(dict.fromkeys(r["system"] for r in rows if r["shots"] is not None))
    for ax, metric in zip(axes, metrics):
        for i, system in enumerate(systems):
            for j, k in enumerate(results["shots"]):
                cells = [r for r in rows if r["system"] == system and r["shots"] == k]
                xs = [r["steps"] for r in cells]
                ys = [r["metrics"][metric]["mean"] for r in cells]
                err = [r["metrics"][metric]["ci95"] for r in cells]
                ax.errorbar(xs, ys, yerr=np.nan_to_num(err), marker="o", capsize=2, color=f"C{i}",
                            alpha=0.4 + 0.6 * (j + 1) / len(results["shots"]), label=f"{system}, K={k}")
        for r, style in zip((r for r in rows if r["shots"] is None), (":", "--")):
            ax.axhline(r["metrics"][metric]["mean"], color="gray", linestyle=style, label=r["system"])
        ax.set_xlabel("adaptation steps")
        ax.set_title(metric + (" (lower better)" if lower_is_better[metric] else " (higher better)"))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(6, len(labels)), fontsize=8)
    return fig
