"""The memory-augmented learner learns to use its memory: held-out speakers' query loss is lower with
their own support written than with an empty memory or another speaker's (an 800-step training, marked
``slow``); adapt -> synthesize and the memory-analysis notebook, on a briefly trained learner."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TEST_SEED, execute_notebook
from lightning_tts.cli import main
from lightning_tts.config import load_config
from lightning_tts.learners.base import AdaptedState
from lightning_tts.data.datamodule import build_datamodule
from lightning_tts.data.plans import TaskBatches
from lightning_tts.training import run

STEPS = 800


def fit_mann(tmp_path_factory: pytest.TempPathFactory, steps: int):
    """(config, run result, corpus) of the memory-augmented learner trained ``steps`` steps on 28 speakers."""
    from lightning_tts.data.synthetic import build_synthetic_corpus

    tmp = tmp_path_factory.mktemp("mann")
    corpus = build_synthetic_corpus(tmp / "corpus", speakers=28, utterances=12, seed=5, workers=2, progress=False)
    cfg = load_config(["conf/learner/mann.yaml"], [
        f"data.root={corpus}", f"data.cache_dir={tmp / 'cache'}", f"trainer.default_root_dir={tmp / 'runs'}",
        "data.splits.val=2", "data.splits.test=4", "data.preprocess_workers=1", "data.tasks.tasks_per_batch=2",
        f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}", "trainer.check_val_every_n_epoch=null",
        "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "loss.bin_start=100", "loss.bin_warmup=100",
        "fewshot.every=0", "learner.memory.slots=48", f"seed={TEST_SEED}"])
    return cfg, run(cfg, "fit", progress=False), corpus


@pytest.fixture(scope="module")
def mann_trained(tmp_path_factory: pytest.TempPathFactory):
    """Trained long enough to learn to use its memory (minutes on 2 cores: only the slow test uses it)."""
    return fit_mann(tmp_path_factory, STEPS)


@pytest.fixture(scope="module")
def mann_run(tmp_path_factory: pytest.TempPathFactory):
    """A few steps: enough for the commands and the notebook, which test plumbing, not learning."""
    return fit_mann(tmp_path_factory, 4)


@pytest.mark.slow
def test_own_memory_beats_empty_and_other_speakers_memory(mann_trained) -> None:
    cfg, result, _ = mann_trained
    learner = result.learner.eval()
    dm = build_datamodule(cfg, TaskBatches(), progress=False)
    tasks = [task for batch in dm.test_dataloader() for task in batch.tasks()]
    states = [learner.adapt(task.support) for task in tasks]  # writing only (adapt_steps=0)
    empty = AdaptedState(learner.initial_speaker(), extras={"memory": learner.memory.reset(1).memory[0]})
    own, blank, other = [], [], []
    with torch.no_grad():
        for i, task in enumerate(tasks):
            own.append(float(learner.query_losses(task.query, states[i])["mel_loss"]))
            blank.append(float(learner.query_losses(task.query, empty)["mel_loss"]))
            others = [j for j, t in enumerate(tasks) if t.speaker != task.speaker]
            other.append(np.mean([float(learner.query_losses(task.query, states[j])["mel_loss"]) for j in others]))
    print(f"{len(tasks)} held-out tasks, query mel L1: own memory {np.mean(own):.4f}, empty {np.mean(blank):.4f}, "
          f"other speakers' memories {np.mean(other):.4f}")
    assert len({t.speaker for t in tasks}) == 4
    assert np.mean(own) < np.mean(blank) - 0.02 and np.mean(own) < np.mean(other) - 0.02
    assert sum(o < b for o, b in zip(own, blank)) >= len(tasks) - 1
    assert sum(o < x for o, x in zip(own, other)) >= len(tasks) - 1
    assert {"val/mel_loss_empty", "val/mel_loss_other"} <= set(result.metrics)
    assert any((result.run_dir / "images").glob("*_memory.png"))


def test_adapt_then_synthesize_reads_the_stored_memory(mann_run, tmp_path: Path) -> None:
    cfg, result, _ = mann_run
    dm = build_datamodule(cfg, TaskBatches(), progress=False)
    speaker = dm.split.test[0]
    support = tmp_path / "support"
    support.mkdir()
    utts = [u for u in dm.index.utterances if u.speaker == speaker]
    for u in utts[:4]:
        (support / Path(u.path).name).write_bytes(Path(u.path).read_bytes())
        (support / Path(u.path).with_suffix(".txt").name).write_text(u.text)
    voice = tmp_path / "voice.pt"
    assert main(["adapt", "--checkpoint", str(result.last_checkpoint), "--support", str(support), "--out", str(voice),
                 "--no-progress"]) == 0
    extras = torch.load(voice, weights_only=True)["state"]["extras"]
    assert extras["memory"].shape == (48, 128) and extras["usage"].shape == (48,)
    for flag in (["--adapted", str(voice)], ["--reference", str(utts[0].path), str(utts[1].path)]):
        out = tmp_path / "out.wav"
        assert main(["synthesize", "--checkpoint", str(result.last_checkpoint), *flag, "--text", utts[5].text,
                     "--out", str(out)]) == 0
        assert out.stat().st_size > 1000


def test_memory_analysis_notebook(mann_run) -> None:
    cfg, result, corpus = mann_run
    outputs = execute_notebook("memory_analysis.ipynb", {
        "LIGHTNING_TTS_CHECKPOINT": str(result.last_checkpoint), "LIGHTNING_TTS_OVERRIDES": " ".join(
            [f"data.root={corpus}", f"data.cache_dir={cfg.data.cache_dir}", "data.splits.val=2", "data.splits.test=4"])})
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2
    assert any("slots written" in o.get("text", "") for o in outputs)
