"""bf16-mixed training runs for every learner (and MAML from the memory start) on CPU and keeps its
losses finite."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import MAML_MEMORY_START, small_learner_overrides
from lightning_tts.learners import available
from lightning_tts.training import run

# every registered learner, and MAML from the memory start (its batched memory writes under autocast)
CASES = {name: small_learner_overrides(name) for name in available()}
CASES["maml-memory-start"] = (*CASES["maml"], *MAML_MEMORY_START)


@pytest.mark.parametrize("case", CASES)
def test_bf16_mixed_fit(make_cfg, synthetic_root: Path, case: str) -> None:
    cfg = make_cfg(f"data.root={synthetic_root}", "data.splits.val=2", "data.splits.test=2", "trainer.max_steps=3",
                   "trainer.val_check_interval=3", "trainer.check_val_every_n_epoch=null", "trainer.limit_val_batches=1",
                   "trainer.precision=bf16-mixed", "trainer.enable_progress_bar=false", "fewshot.every=0", *CASES[case])
    result = run(cfg, "fit", progress=False)
    assert result.learner.trainer.precision == "bf16-mixed"
    losses = {k: v for k, v in result.metrics.items() if k.endswith("loss") or k.endswith("eer")}
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    assert ckpt["global_step"] == 3
    assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_maml_refuses_fp16() -> None:
    from lightning_tts.errors import LightningTTSError
    from lightning_tts.learners.maml import check_precision

    for ok in ("32-true", "bf16-mixed", "bf16-true"):
        check_precision(ok)
    for bad in ("16-mixed", "16-true"):
        with pytest.raises(LightningTTSError, match="use trainer.precision=bf16-mixed"):
            check_precision(bad)


def test_adaptation_leaves_fp16_autocast_but_keeps_bf16() -> None:
    from lightning_tts.learners.base import fp32_gradients

    cpu = torch.device("cpu")
    a = torch.ones(2, 2)
    with torch.autocast("cpu", dtype=torch.float16):
        assert (a @ a).dtype == torch.float16
        with fp32_gradients(cpu):
            assert (a @ a).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with fp32_gradients(cpu):
            assert (a @ a).dtype == torch.bfloat16
