"""Traceable outputs: every config, checkpoint, adapted voice and results file says what wrote it."""
from __future__ import annotations

from pathlib import Path

import torch

from lightning_tts.adaptation import save_adapted
from lightning_tts.config import load_config
from lightning_tts.learners import load_learner
from lightning_tts.learners.base import AdaptedState
from lightning_tts.provenance import PACKAGES, provenance
from lightning_tts.schema import save_config

FIXTURE = Path(__file__).parent / "fixtures" / "old_checkpoints" / "multispeaker_format1.ckpt"


def test_provenance_names_versions_and_commit() -> None:
    info = provenance()
    assert info["lightning_tts"] and set(info["packages"]) == set(PACKAGES)
    assert info["packages"]["torch"] == torch.__version__.split("+")[0]
    repo = Path(__file__).resolve().parents[1]
    if (repo / ".git").exists():  # run from a checkout: the commit is a 40-hex-digit sha
        assert len(info["git_commit"]) == 40 and int(info["git_commit"], 16) >= 0


def test_saved_config_is_headed_by_provenance_and_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    save_config(load_config([], ["trainer.max_steps=7"]), path)
    head = path.read_text().splitlines()[:2]
    assert head[0].startswith("# written by lightning_tts") and "torch" in head[1]
    assert load_config([path]).trainer.max_steps == 7


def test_checkpoints_and_adapted_voices_record_provenance(tmp_path: Path) -> None:
    learner = load_learner(FIXTURE)
    checkpoint: dict = {}
    learner.on_save_checkpoint(checkpoint)
    assert checkpoint["lightning_tts_provenance"] == provenance()
    voice = tmp_path / "voice.pt"
    save_adapted(voice, AdaptedState(torch.zeros(learner.model.speaker_dim)), learner, FIXTURE, {})
    assert torch.load(voice, weights_only=True)["provenance"] == provenance()
