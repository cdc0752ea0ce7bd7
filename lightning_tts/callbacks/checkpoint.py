"""Checkpointing: ``last.ckpt`` always holds the final step of a run, plus the best on ``val/mel_loss``."""
from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that also writes ``last.ckpt`` when training ends after the last save.

    Lightning saves at validation ends only, so the steps after the last validation were lost from
    ``last.ckpt``; a resumed run would repeat them. (Relies on ``ModelCheckpoint`` internals of
    Lightning 2.x: ``_last_global_step_saved``, ``_save_last_checkpoint``.)
    """

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
