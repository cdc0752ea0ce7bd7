"""What a run cost: optimiser steps (its own and its warm-start sources'), utterances seen, wall time
and device, written into every checkpoint as ``training_cost`` so a comparison can state each
system's budget (``evaluate`` copies it into ``results.json``). The counters survive a resume: the
callback's state is saved with the checkpoint and restored by Lightning.
"""
from __future__ import annotations

import time
from typing import Any, Optional

import pytorch_lightning as pl
import torch

from lightning_tts.data.tasks import batch_utterances


def device_name(device: torch.device) -> str:
    """'cpu (N threads)' or the CUDA card's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


class TrainingCost(pl.Callback):
    """Counts utterances and wall-clock seconds of training and stamps ``checkpoint["training_cost"]``:

    - ``optimizer_steps``: this run's optimiser steps (``trainer.global_step``);
    - ``prior_steps``: the steps of the warm-start chain it began from (0 without ``init_from``);
    - ``total_steps``: their sum;
    - ``utterances_seen``: training utterances over all ranks (a task counts support + query);
    - ``wall_seconds``: time inside the training loop, validation included, summed over resumes;
    - ``device``, ``world_size``.
    """

    def __init__(self) -> None:
        self.utterances = 0
        self.seconds = 0.0
        self._since: Optional[float] = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._since = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._bank()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.utterances += batch_utterances(batch) * trainer.world_size  # every rank draws its own batch

    def _bank(self) -> None:
        """Add the time since the last mark to ``seconds``."""
        if self._since is not None:
            now = time.perf_counter()
            self.seconds += now - self._since
            self._since = now

    def record(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """The ``training_cost`` record as of now."""
        self._bank()
        warm = getattr(pl_module, "warm_start_record", None) or {}
        prior = int(warm.get("prior_steps", 0))
        return {"optimizer_steps": trainer.global_step, "prior_steps": prior, "total_steps": trainer.global_step + prior,
                "utterances_seen": self.utterances, "wall_seconds": round(self.seconds, 3),
                "device": device_name(pl_module.device), "world_size": trainer.world_size}

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["training_cost"] = self.record(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"utterances": self.utterances, "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.utterances, self.seconds = int(state_dict["utterances"]), float(state_dict["seconds"])
