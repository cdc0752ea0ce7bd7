"""Figures: predicted vs target mel with the learned alignment; mel thumbnails; few-shot adaptation curves; speaker
maps (UMAP/t-SNE/PCA projections of embeddings) and speaker distance matrices.

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


def mel_image_figure(mel: torch.Tensor, width: float = 2.4, height: float = 0.9) -> Any:
    """A bare (T, n_mels) log-mel image (time on x, no axes or colour bar): a thumbnail beside a player."""
    plt = pyplot()
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(mel.float().T.cpu().numpy(), origin="lower", aspect="auto", interpolation="nearest", cmap="magma")
    ax.set_axis_off()
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
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 4.2), constrained_layout=True,
                             squeeze=False)  # (1, len(metrics)) even for one metric
    axes = axes[0]
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


PROJECTIONS = ("umap", "tsne", "pca")


def project_embeddings(vectors: np.ndarray, method: str = "umap", seed: int = 0) -> np.ndarray:
    """(N, D) embeddings -> (N, 2) for plotting, deterministic for a seed.

    ``umap`` (umap-learn, cosine metric; imported here, never at package import: its first import and
    fit pay for numba compilation), ``tsne`` (scikit-learn) or ``pca``.

    Raises:
        ValueError: unknown method, or fewer than 3 points.
    """
    if method not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {method!r}")
    if len(vectors) < 3:
        raise ValueError(f"a 2-D projection needs at least 3 embeddings, got {len(vectors)}")
    if method == "pca":
        centred = vectors - vectors.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(2, perplexity=min(30.0, (len(vectors) - 1) / 3), random_state=seed, init="pca").fit_transform(vectors)
    import warnings

    import umap  # lazy: see the docstring

    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(vectors) - 1), metric="cosine", random_state=seed,
                        n_jobs=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)  # a seed means 1 thread
        return reducer.fit_transform(vectors)


def speaker_map_figure(points: np.ndarray, speakers: Sequence[str], genders: Mapping[str, str], title: str = "") -> Any:
    """Scatter of (N, 2) projected embeddings: one colour per speaker, marker by gender (o = F, ^ = M,
    s = unknown), speaker names at their centroids."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 6.5), constrained_layout=True)
    names = sorted(set(speakers))
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    markers = {"F": "o", "M": "^"}
    labels = np.asarray(speakers)
    for i, name in enumerate(names):
        pts = points[labels == name]
        gender = str(genders.get(name, "")).upper()[:1]
        ax.scatter(pts[:, 0], pts[:, 1], s=22, color=cmap(i % cmap.N), marker=markers.get(gender, "s"), alpha=0.8)
        centre = pts.mean(0)
        ax.annotate(name, centre, fontsize=7, ha="center", va="center",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.6, "lw": 0})
    present = sorted({str(genders.get(n, "")).upper()[:1] for n in names})
    for g in present:
        ax.scatter([], [], color="gray", marker=markers.get(g, "s"), label={"F": "female", "M": "male"}.get(g, "unknown"))
    ax.legend(loc="best", fontsize=8, title="gender")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{len(names)} speakers, {len(points)} utterances")
    return fig


def distance_matrix_figure(distances: np.ndarray, names: Sequence[str], title: str = "") -> Any:
    """Heat map of a (K, K) speaker distance matrix."""
    plt = pyplot()
    size = 2.5 + 0.32 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.2, size), constrained_layout=True)
    im = ax.imshow(distances, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    return fig


def memory_reads_figure(weights: torch.Tensor, title: str = "", slot_labels: Optional[Sequence[str]] = None) -> Any:
    """Memory read weights over output frames: (T, N) as an image, time on x and slots on y."""
    plt = pyplot()
    n = weights.shape[1]
    fig, ax = plt.subplots(figsize=(10, 2.0 + 0.05 * n), constrained_layout=True)
    im = ax.imshow(weights.float().T.cpu().numpy(), origin="lower", aspect="auto", interpolation="none", cmap="magma")
    ax.set_xlabel("output frame")
    ax.set_ylabel("memory slot")
    if slot_labels is not None:
        ax.set_yticks(range(n), slot_labels, fontsize=5)
    fig.colorbar(im, ax=ax, label="read weight")
    ax.set_title(title or "memory read weights")
    return fig
