"""Warm start (``init_from=CKPT``): a MAML run starts from a few steps of the multispeaker baseline.

Tiny runs on the session's synthetic corpus: the baseline trains 3 steps, MAML 2 (and 1 more on resume).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from conftest import small_learner_overrides
from lightning_tts.atomic import file_sha256
from lightning_tts.config import load_config
from lightning_tts.data.tasks import UtteranceBatch
from lightning_tts.errors import ConfigError, LightningTTSError
from lightning_tts.learners import WarmStartConfig, build_learner, warm_start
from lightning_tts.learners.base import OptimConfig
from lightning_tts.text import SYMBOLS
from lightning_tts.training import RunResult, run, start_weights

SOURCE_STEPS, WARM_STEPS = 3, 2


class Capture(pl.Callback):
    """What the learner holds when training starts (after any warm start or resume)."""

    def on_train_start(self, trainer: pl.Trainer, learner: Any) -> None:
        self.state = {k: v.detach().clone() for k, v in learner.state_dict().items()}
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.schedule_step = learner.schedule_step
        self.frozen = {n for n, p in learner.named_parameters() if not p.requires_grad}


def _cfg(corpus: Path, tmp: Path, *overrides: str):
    return load_config([], [f"data.root={corpus}", f"data.cache_dir={tmp / 'cache'}",
                            f"trainer.default_root_dir={tmp / 'runs'}", "data.splits.val=2", "data.splits.test=2",
                            "data.preprocess_workers=1",
                            "trainer.enable_progress_bar=false", "trainer.limit_val_batches=1",
                            "trainer.check_val_every_n_epoch=null", "fewshot.every=0", *overrides])


def _fit(cfg, callback: pl.Callback | None = None) -> RunResult:
    return run(cfg, "fit", progress=False, callbacks=[callback] if callback else ())


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("warm_start")


@pytest.fixture(scope="module")
def source(synthetic_root: Path, tmp: Path) -> Path:
    """``last.ckpt`` of a 3-step multispeaker run."""
    cfg = _cfg(synthetic_root, tmp, *small_learner_overrides("multispeaker"), f"trainer.max_steps={SOURCE_STEPS}")
    return _fit(cfg).last_checkpoint


def _maml(corpus: Path, tmp: Path, *overrides: str):
    return _cfg(corpus, tmp, *small_learner_overrides("maml"), *overrides)


@pytest.fixture(scope="module")
def warm(synthetic_root: Path, tmp: Path, source: Path) -> tuple[RunResult, Capture]:
    """A 2-step MAML run warm-started from ``source`` with the aligner frozen."""
    capture = Capture()
    cfg = _maml(synthetic_root, tmp, f"trainer.max_steps={WARM_STEPS}", f"init_from={source}",
                "warm_start.freeze_aligner=true")
    return _fit(cfg, capture), capture


def test_maml_starts_from_the_baselines_weights(source: Path, warm: tuple[RunResult, Capture]) -> None:
    result, start = warm
    theirs = torch.load(source, weights_only=True)
    model = {k: v for k, v in theirs["state_dict"].items() if k.startswith("model.")}
    assert model and all(torch.equal(start.state[k], v) for k, v in model.items())
    torch.testing.assert_close(start.state["speaker_init"], theirs["state_dict"]["speaker_table.weight"].mean(0))
    # the frozen aligner stays the source's; the rest of the model trains
    ours = torch.load(result.last_checkpoint, weights_only=True)["state_dict"]
    assert start.frozen and all(n.startswith("model.aligner.") for n in start.frozen)
    assert all(torch.equal(ours[k], v) for k, v in model.items() if k.startswith("model.aligner."))
    assert any(not torch.equal(ours[k], v) for k, v in model.items())


def test_the_run_records_the_source_and_continues_its_schedules(source: Path, warm: tuple[RunResult, Capture]) -> None:
    result, start = warm
    saved = OmegaConf.load(result.run_dir / "config.yaml")
    assert saved.init_from == str(source) and saved.init_from_sha256 == file_sha256(source)
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    record, cost = ckpt["warm_start"], ckpt["training_cost"]
    assert (cost["prior_steps"], cost["total_steps"]) == (SOURCE_STEPS, SOURCE_STEPS + ckpt["global_step"])
    assert record["path"] == str(source.resolve()) and record["sha256"] == file_sha256(source)
    assert record["source_learner"] == "multispeaker"
    assert record["source_global_step"] == record["prior_steps"] == SOURCE_STEPS
    assert record["schedule_offset"] == SOURCE_STEPS == start.schedule_step  # at this run's step 0
    assert record["copied"] == ["model", "speaker_init=mean(speaker_table)"]
    optim = OptimConfig()
    assert start.lr == pytest.approx(optim.lr * (SOURCE_STEPS + 1) / optim.warmup_steps)  # warm-up continues


def test_resume_restores_its_own_run_and_ignores_init_from(synthetic_root: Path, tmp: Path, source: Path,
                                                           warm: tuple[RunResult, Capture]) -> None:
    first, _ = warm
    own = torch.load(first.last_checkpoint, weights_only=True)["state_dict"]
    capture = Capture()
    resumed = _fit(_maml(synthetic_root, tmp, f"trainer.max_steps={WARM_STEPS + 1}", "ckpt_path=last",
                         f"init_from={source}"), capture)
    assert resumed.run_dir == first.run_dir
    assert all(torch.equal(capture.state[k], v) for k, v in own.items())
    assert capture.schedule_step == SOURCE_STEPS + WARM_STEPS  # the offset came back with the checkpoint
    assert capture.frozen and all(n.startswith("model.aligner.") for n in capture.frozen)
    saved = OmegaConf.load(resumed.run_dir / "config.yaml")
    assert saved.init_from == str(source.resolve()) and saved.init_from_sha256 == file_sha256(source)
    assert saved.warm_start.freeze_aligner


def _learner(*overrides: str, name: str = "maml"):
    cfg = load_config([], [f"learner.name={name}", *overrides])
    return build_learner(cfg, speakers=["a", "b"], symbols=list(SYMBOLS))


@pytest.mark.parametrize("source_name, target_name, overrides, copied", [
    ("maml", "maml", (), ["model", "speaker_init"]),
    ("metric", "metric", (), ["model", "encoder", "speaker_proj", "ge2e"]),
    ("metric", "metric", ("learner.encoder.channels=32",), ["model", "speaker_proj", "ge2e"]),  # encoder: other sizes
    ("mann", "mann", (), ["model", "memory", "writer", "key_proj", "read_proj", "speaker_key", "speaker_out"]),
    ("metric", "mann", (), ["model"]),
    ("metric", "maml", ("learner.speaker_start=encoder",), ["model", "encoder", "speaker_proj"]),
    ("mann", "maml", ("learner.speaker_start=memory",), ["model", "memory", "writer", "speaker_key", "speaker_out"]),
])
def test_what_maps_between_learners(source_name: str, target_name: str, overrides: tuple[str, ...],
                                    copied: list[str]) -> None:
    source, target = _learner(name=source_name), _learner(*overrides, name=target_name)
    assert target.warm_start_from(source, "init_from x") == copied
    theirs = source.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in target.state_dict().items()
               if any(k == c or k.startswith(f"{c}.") for c in copied))


@pytest.mark.parametrize("source_name, overrides, message", [
    ("metric", ("learner.speaker_start=memory",), "learner.speaker_start=memory needs a mann run of the same sizes "
                                                  "(not copied: memory, writer, speaker_key, speaker_out)"),
    ("mann", ("learner.speaker_start=memory", "learner.writer.segment=8"),
     "learner.speaker_start=memory needs a mann run of the same sizes (its learner.encoder differs from this run's "
     "learner.writer)"),
    ("mann", ("learner.speaker_start=memory", "learner.memory.gamma=0.9"),
     "learner.speaker_start=memory needs a mann run of the same sizes (its learner.memory differs from this run's "
     "learner.memory)"),
    ("baseline", ("learner.speaker_start=encoder",), "learner.speaker_start=encoder needs a metric run of the same "
                                                    "sizes (not copied: encoder, speaker_proj)"),
])
def test_a_zero_shot_start_refuses_a_source_that_cannot_give_it(source_name: str, overrides: tuple[str, ...],
                                                                message: str) -> None:
    """Without this, the start's modules would stay random (not copied) or be read with other sizes
    (a segment length or a forget factor is no tensor shape, so the copy alone would not notice)."""
    name = "multispeaker" if source_name == "baseline" else source_name
    with pytest.raises(LightningTTSError) as err:
        _learner(*overrides).warm_start_from(_learner(name=name), "init_from x")
    assert str(err.value) == f"init_from x: {message}"


def test_a_maml_run_with_the_memory_start_warm_starts_another() -> None:
    source, target = _learner("learner.speaker_start=memory"), _learner("learner.speaker_start=memory")
    assert target.warm_start_from(source, "init_from x") == ["model", "speaker_init", "memory", "writer", "speaker_key",
                                                             "speaker_out"]


@pytest.mark.parametrize("source_name, start", [("metric", "encoder"), ("mann", "memory")])
def test_maml_from_a_zero_shot_learner_starts_at_its_zero_shot_voice(source_name: str, start: str) -> None:
    """``speaker_start=encoder`` warm-started from a metric run (``memory``: from a MANN run): before
    any meta-training or inner step, the start for a support set is exactly the source's zero-shot
    speaker vector for it."""
    source, target = _learner(name=source_name).eval(), _learner(f"learner.speaker_start={start}")
    target.warm_start_from(source, "init_from x")
    g = torch.Generator().manual_seed(3)
    n_mels = source.feature_params.n_mels
    support = UtteranceBatch(tokens=torch.randint(2, 40, (3, 6), generator=g), token_lengths=torch.tensor([6, 6, 5]),
                             mels=torch.randn(3, 40, n_mels, generator=g) - 4, mel_lengths=torch.tensor([40, 33, 21]),
                             speaker_ids=torch.full((3,), -1), speakers=["x"] * 3, utterance_ids=["u0", "u1", "u2"])
    expected = source.adapt_start(support).speaker
    assert torch.allclose(target.adapt(support, steps=0).speaker, expected, atol=1e-6)


@pytest.mark.parametrize("override, needle", [
    ("model.dim=64", "model.embedding.weight has shape ({n}, 128) there and ({n}, 64) here"),
    ("model.decoder_layers=3", "model.decoder.2.attn.qkv.weight is here but not there"),
    ("features.n_mels=40", "checkpoint was trained with features.n_mels=80 but the config has features.n_mels=40"),
    ("text.phonemes=false", "trained with text.phonemes=True and this run has text.phonemes=False"),
])
def test_a_source_that_does_not_fit_fails_in_one_line(source: Path, override: str, needle: str) -> None:
    with pytest.raises(LightningTTSError) as err:
        warm_start(_learner(override), source, WarmStartConfig())
    message = str(err.value)
    assert message.startswith(f"init_from {source}: ") and needle.format(n=len(SYMBOLS)) in message
    assert "\n" not in message


def test_a_changed_file_fails_against_its_recorded_sha256(source: Path) -> None:
    with pytest.raises(LightningTTSError, match=f"init_from {source}: its SHA-256 is {file_sha256(source)} but "
                                                f"init_from_sha256=0123: the file changed"):
        warm_start(_learner(), source, WarmStartConfig(), sha256="0123")


def test_a_missing_file_fails_in_one_line_from_the_command_line(tmp_path: Path) -> None:
    missing = tmp_path / "runs" / "none.ckpt"
    done = subprocess.run([sys.executable, "-m", "lightning_tts", "fit", "--no-progress", f"init_from={missing}",
                           f"trainer.default_root_dir={tmp_path}"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 1 and done.stderr == f"error: init_from not found: {missing}\n"


def test_freezing_the_aligner_needs_a_source() -> None:
    cfg = load_config([], ["warm_start.freeze_aligner=true"])
    with pytest.raises(ConfigError, match="warm_start.freeze_aligner=true needs init_from=CKPT"):
        start_weights(cfg, _learner(), resume=None)
