"""Run by test_datamodule.py: 2-process CPU DDP (gloo) that records the tasks each rank receives.

usage: python ddp_probe.py CORPUS_ROOT CACHE_DIR OUT_DIR
"""
import json
import sys
from collections import defaultdict
from pathlib import Path

import pytorch_lightning as pl
import torch

from lightning_tts.audio import FeatureParams
from lightning_tts.config import load_config
from lightning_tts.data.datamodule import SpeakerTaskDataModule
from lightning_tts.data.plans import TaskBatches


class Recorder(pl.LightningModule):
    """Records each task's speaker, support and query ids per epoch; trains one dummy weight."""

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.out = out
        self.seen: dict[int, list] = defaultdict(list)

    def training_step(self, batch, batch_idx):
        for task in batch.tasks():
            self.seen[self.current_epoch].append(
                {"speaker": task.speaker, "support": task.support.utterance_ids, "query": task.query.utterance_ids})
        return (self.weight * batch.query.mels.mean()).sum()

    def on_train_end(self) -> None:
        (self.out / f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


if __name__ == "__main__":
    root, cache, out = sys.argv[1:4]
    cfg = load_config([], [f"data.root={root}", f"data.cache_dir={cache}", "data.splits.val=2", "data.splits.test=2",
                           "data.tasks.tasks_per_batch=2", "data.tasks.tasks_per_epoch=16"])
    dm = SpeakerTaskDataModule(cfg.data, FeatureParams.from_config(cfg.features), TaskBatches(), seed=7,
                               progress=False)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, use_distributed_sampler=False,
                         logger=False, enable_checkpointing=False, limit_val_batches=0, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(Recorder(Path(out)), datamodule=dm)
