"""Validation images: predicted vs target mel and the learned alignment (and memory reads), written by rank 0."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from lightning_tts.learners.base import ValidationExample
from lightning_tts.plots import mel_alignment_figure, memory_reads_figure, save_figure


class ValidationImagesCallback(pl.Callback):
    """After each validation, save ``<run_dir>/images/val_step<N>.png`` from the first validation batch.

    The learner's ``validation_step`` returns a ``ValidationExample`` for that batch; its
    ``memory_reads`` (T, N) (memory-augmented learner) also give ``val_step<N>_memory.png``. Figures also go to every logger that accepts images (TensorBoard).

    Args:
        directory: where PNGs are written.
    """

    def __init__(self, directory: str | Path) -> None:
        super().__init__()
        self.directory = Path(directory)
        self._example: Optional[ValidationExample] = None

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and isinstance(outputs, ValidationExample):
            cpu = lambda t: None if t is None else t.detach().float().cpu()  # noqa: E731
            self._example = replace(outputs, predicted=cpu(outputs.predicted), target=cpu(outputs.target),
                                    alignment=cpu(outputs.alignment), memory_reads=cpu(outputs.memory_reads))

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._example is None or trainer.sanity_checking:
            return
        step = trainer.global_step
        example = self._example
        figures = {"mel_alignment": (mel_alignment_figure(example.predicted, example.target, example.alignment,
                                                          title=f"validation, step {step}"),
                                     f"val_step{step:07d}.png")}
        if example.memory_reads is not None:
            figures["memory_reads"] = (memory_reads_figure(example.memory_reads,
                                                           title=f"memory reads of a validation query, step {step}"),
                                       f"val_step{step:07d}_memory.png")
        for tag, (fig, name) in figures.items():
            for logger in trainer.loggers:
                experiment = getattr(logger, "experiment", None)
                if hasattr(experiment, "add_figure"):
                    experiment.add_figure(f"val/{tag}", fig, global_step=step, close=False)
            save_figure(fig, self.directory / name)
        self._example = None
