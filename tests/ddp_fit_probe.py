"""Run by the DDP tests: ``fit`` under 2-process CPU DDP (gloo); each rank saves its final parameters.

usage: python ddp_fit_probe.py OUT_DIR override [override ...]
"""
import os
import sys
from pathlib import Path

import torch

from lightning_tts.config import load_config
from lightning_tts.training import run

if __name__ == "__main__":
    out = Path(sys.argv[1])
    cfg = load_config([], ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
                           "trainer.enable_progress_bar=false", *sys.argv[2:]])
    result = run(cfg, "fit", progress=False)
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.save({k: v.detach().cpu() for k, v in result.learner.state_dict().items()}, out / f"rank{rank}.pt")
