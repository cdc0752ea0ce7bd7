"""The seams the package is built around: typed learner capabilities, batch plans, the vocoder
registry and the config dataclasses next to the classes they configure."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_tts.audio import FeatureParams
from lightning_tts.data.plans import BatchPlan, SpeakerBatches, TaskBatches, UtteranceBatches
from lightning_tts.errors import ConfigError
from lightning_tts.learners import available, get_learner, load_learner, migrate_hyperparameters
from lightning_tts.learners.base import BaseLearner
from lightning_tts.learners.capabilities import ReferenceCloning, SpeakerEncoding, SpeakerTable
from lightning_tts.models.vocoder import GriffinLimConfig, GriffinLimVocoder, VocoderConfig, build_vocoder
from lightning_tts.schema import build

FIXTURES = Path(__file__).parent / "fixtures" / "old_checkpoints"
CAPABILITIES = {  # what each learner can do beyond adapt + synthesize
    "multispeaker": {SpeakerTable},
    "maml": set(),
    "metric": {ReferenceCloning, SpeakerEncoding},
    "mann": {ReferenceCloning},
}


@pytest.mark.parametrize("name", sorted(CAPABILITIES))
def test_capabilities_are_typed(name: str) -> None:
    learner = load_learner(FIXTURES / f"{name}_format1.ckpt")
    have = {c for c in (ReferenceCloning, SpeakerEncoding, SpeakerTable) if isinstance(learner, c)}
    assert have == CAPABILITIES[name]
    assert not any(hasattr(BaseLearner, m) for m in ("reference_state", "embed_utterances", "speaker_state"))


def test_batch_plans_are_typed_objects() -> None:
    assert all(isinstance(get_learner(name).batches, BatchPlan) for name in available())
    plans = {name: get_learner(name).batches for name in CAPABILITIES}
    assert plans == {"multispeaker": UtteranceBatches(), "maml": TaskBatches(), "metric": SpeakerBatches(),
                     "mann": TaskBatches()}


def test_a_learner_without_an_adaptation_start_cannot_be_built() -> None:
    class Incomplete(BaseLearner):
        name = "incomplete"

    with pytest.raises(TypeError, match="adapt_start"):
        Incomplete(symbols=["_"], speakers=["a"], features={}, model={}, loss={}, optim={}, learner={})


def test_format1_hyperparameters_migrate_into_one_learner_section() -> None:
    old = {"symbols": ["_", "a"], "features": {}, "speakers": ["s"], "model": {"dim": 8}, "loss": {}, "optim": {},
           "phonemes": False, "adapt_steps": 3, "adapt_lr": None, "memory": {"slots": 4}, "learner_name": "mann"}
    new = migrate_hyperparameters(old, 1)
    assert new["learner"] == {"name": "mann", "adapt_steps": 3, "memory": {"slots": 4}}  # None: today's default
    assert {k: new[k] for k in ("symbols", "model", "phonemes")} == {"symbols": ["_", "a"], "model": {"dim": 8},
                                                                      "phonemes": False}
    assert migrate_hyperparameters(new, 2) == new


def test_build_checks_keys_and_types_and_fills_defaults() -> None:
    config = build(VocoderConfig, {"griffin_lim": {"iters": 4}})
    assert config == VocoderConfig(name="griffin_lim", griffin_lim=GriffinLimConfig(iters=4))
    with pytest.raises(ConfigError, match="vocoder.griffin_lim.itres"):
        build(VocoderConfig, {"griffin_lim": {"itres": 4}}, "vocoder")
    with pytest.raises(ConfigError, match="iters"):
        build(VocoderConfig, {"griffin_lim": {"iters": "many"}}, "vocoder")


def test_build_vocoder_is_the_one_seam() -> None:
    params = FeatureParams()
    vocoder = build_vocoder(VocoderConfig(griffin_lim=GriffinLimConfig(iters=2)), params)
    assert isinstance(vocoder, GriffinLimVocoder) and vocoder.griffin_lim.n_iter == 2
    wav = vocoder(torch.full((20, params.n_mels), -5.0))
    assert abs(wav.numel() - 20 * params.hop_length) <= params.hop_length and vocoder.sample_rate == params.sample_rate
    with pytest.raises(ConfigError, match="unknown vocoder.name 'hifi'; available: griffin_lim"):
        build_vocoder(VocoderConfig(name="hifi"), params)
