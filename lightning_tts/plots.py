"""Figures: predicted vs target mel with the learned alignment (more plots join in later issues).

matplotlib is imported lazily with the Agg backend, so plotting works on headless nodes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from lightning_tts.atomic import atomic_path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mel_alignment_figure(predicted: torch.Tensor, target: torch.Tensor, alignment: Optional[torch.Tensor] = None,
                         title: str = "") -> Any:
    """Predicted (T, n_mels) over target (T, n_mels) mel, and the (T, L) alignment if given."""
    plt = _pyplot()
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
    plt = _pyplot()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return target
