"""Validation images: predicted vs target mel and the learned alignment (and memory reads), written by rank 0."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from lightning_tts.plots import mel_alignment_figure, memory_reads_figure, save_figure


class ValidationImagesCallback(pl.Callback):
    """After each validation, save ``<run_dir>/images/val_step<N>.png`` from the first validation batch.

    The learner's ``validation_step`` returns ``{"predicted", "target", "alignment"?, "read_weights"?}``
    for that batch; ``read_weights`` (T, N) (memory-augmented learner) also gives
    ``val_step<N>_memory.png``. Figures also go to every logger that accepts images (TensorBoard).

    Args:
        directory: where PNGs are written.
    """

    def __init__(self, directory: str | Path) -> None:
        super().__init__()
        self.directory = Path(directory)
        self._example: dict[str, Any] | None = None

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and isinstance(outputs, dict) and "predicted" in outputs:
            self._example = {k: v.detach().float().cpu() for k, v in outputs.items()}

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._example is None or trainer.sanity_checking:
            return
        step = trainer.global_step
        figures = {"mel_alignment": (mel_alignment_figure(self._example["predicted"], self._example["target"],
                                                          self._example.get("alignment"), title=f"validation, step {step}"),
                                     f"val_step{step:07d}.png")}
        if "read_weights" in self._example:
            figures["memory_reads"] = (memory_reads_figure(self._example["read_weights"],
                                                           title=f"memory reads of a validation query, step {step}"),
                                       f"val_step{step:07d}_memory.png")
        for tag, (fig, name) in figures.items():
            for logger in trainer.loggers:
                experiment = getattr(logger, "experiment", None)
                if hasattr(experiment, "add_figure"):
                    experiment.add_figure(f"val/{tag}", fig, global_step=step, close=False)
            save_figure(fig, self.directory / name)
        self._example = None
