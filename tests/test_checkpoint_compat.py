"""Checkpoints written by earlier versions load, adapt and synthesise exactly as they did.

``tests/fixtures/old_checkpoints/<learner>_format1.ckpt`` are tiny checkpoints (2 training steps on a
6-speaker synthetic corpus) written by the code of commit 77a55e1, before the learner constructor
took one ``learner`` section (checkpoint format 1). ``reference_outputs.pt`` holds what that code
produced from each: the speaker vector after 2 adaptation steps on a fixed support batch, the
teacher-forced mels of that batch, and a free-running synthesis.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_tts.data.tasks import collate_utterances
from lightning_tts.learners import available, load_learner
from lightning_tts.learners.base import CHECKPOINT_FORMAT

FIXTURES = Path(__file__).parent / "fixtures" / "old_checkpoints"
REFERENCE = torch.load(FIXTURES / "reference_outputs.pt", weights_only=True)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_format1_checkpoint_adapts_and_synthesises_as_before(name: str) -> None:
    path = FIXTURES / f"{name}_format1.ckpt"
    assert torch.load(path, weights_only=True)["lightning_tts_format"] == 1 < CHECKPOINT_FORMAT
    learner = load_learner(path)
    ref = REFERENCE[name]
    items = [{"tokens": torch.tensor(learner.text.encode(text)), "mel": mel, "speaker_id": -1, "speaker": "new",
              "utterance_id": f"u{i}"} for i, (text, mel) in enumerate(zip(ref["support_texts"], ref["support_mels"]))]
    support = collate_utterances(items)
    torch.manual_seed(0)
    state = learner.adapt(support, steps=2)
    torch.testing.assert_close(state.speaker, ref["speaker"], rtol=1e-4, atol=1e-5)
    teacher_forced = learner.run_model(support, state.speaker.expand(len(support), -1), state.params or None,
                                       learner.align(support), state.extras).mel
    torch.testing.assert_close(teacher_forced, ref["teacher_forced"], rtol=1e-4, atol=1e-4)
    mel = learner.synthesize(torch.tensor(learner.text.encode(ref["text"])), state, pace=0.05)
    torch.testing.assert_close(mel, ref["mel"], rtol=1e-4, atol=1e-4)


def test_the_fixtures_cover_every_learner_of_format_1() -> None:
    assert set(REFERENCE) == {"multispeaker", "maml", "metric", "mann"} <= set(available())


def test_new_checkpoints_store_one_learner_section(tmp_path: Path) -> None:
    learner = load_learner(FIXTURES / "maml_format1.ckpt")
    hparams = dict(learner.hparams)
    assert hparams["learner"]["name"] == "maml" and "inner_steps" in hparams["learner"]
    assert "learner_name" not in hparams and "inner_steps" not in hparams
