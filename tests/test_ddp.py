"""2-process CPU DDP (gloo): every learner ends with identical parameters on both ranks."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import MAML_MEMORY_START, small_learner_overrides
from lightning_tts.learners import available

PROBE = Path(__file__).parent / "ddp_fit_probe.py"


def run_ddp(tmp_path: Path, corpus: Path, *overrides: str) -> tuple[dict, dict]:
    """Fit under 2-rank DDP; return both ranks' final state dicts."""
    out = tmp_path / "ranks"
    out.mkdir()
    args = [f"data.root={corpus}", f"data.cache_dir={tmp_path / 'cache'}", f"trainer.default_root_dir={tmp_path / 'runs'}",
            "data.splits.val=2", "data.splits.test=2", "data.batch_size=4", "trainer.max_steps=4",
            "trainer.limit_val_batches=1", "trainer.val_check_interval=4", "trainer.check_val_every_n_epoch=null",
            *overrides]
    proc = subprocess.run([sys.executable, str(PROBE), str(out), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return (torch.load(out / "rank0.pt", weights_only=True), torch.load(out / "rank1.pt", weights_only=True))


# every registered learner with its defaults, plus variants whose code paths differ under DDP
CASES = {name: small_learner_overrides(name) for name in available()}
CASES.update({
    "maml-higher-2nd": (*CASES["maml"], "learner.backend=higher"),
    "maml-higher-1st": (*CASES["maml"], "learner.backend=higher", "learner.first_order=true"),
    "maml-memory-start": (*CASES["maml"], *MAML_MEMORY_START),
    "metric-triplet-joint": (*CASES["metric"], "learner.metric_loss=triplet", "learner.mining=semi_hard",
                             "learner.encoder_mode=joint"),
})


@pytest.mark.parametrize("case", CASES)
def test_ddp_ranks_end_identical(tmp_path: Path, synthetic_root: Path, case: str) -> None:
    learner = CASES[case][0].split("=")[1]
    rank0, rank1 = run_ddp(tmp_path, synthetic_root, *CASES[case])
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    last = torch.load(next((tmp_path / "runs").glob(f"{learner}/version_0/checkpoints/last.ckpt")), weights_only=True)
    assert last["global_step"] == 4
    assert {int(s["step"]) for s in last["optimizer_states"][0]["state"].values()} == {4}  # it did train
