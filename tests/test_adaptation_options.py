"""Regularised adaptation (``adapt_anchor``, ``adapt_holdout``) and ``set_adaptation`` on a tiny baseline."""
from __future__ import annotations

import pytest
import torch

from lightning_tts.data.tasks import UtteranceBatch
from lightning_tts.errors import LightningTTSError
from lightning_tts.learners.maml import MAMLLearner
from lightning_tts.learners.multispeaker import MultiSpeakerLearner
from lightning_tts.models.losses import masked_l1
from lightning_tts.text import SYMBOLS

TINY = {"dim": 16, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "ffn_dim": 32, "kernel_size": 3,
        "dropout": 0.0, "speaker_dim": 4, "predictor_channels": 8, "aligner_channels": 8}
FEATURES = {"sample_rate": 16000, "n_fft": 1024, "hop_length": 256, "win_length": 1024, "n_mels": 12, "fmin": 0.0,
            "fmax": 8000.0, "pitch": False, "energy": False}
SECTIONS = {"symbols": SYMBOLS, "speakers": ["a", "b"], "features": FEATURES, "model": TINY, "loss": {}, "optim": {}}


def baseline(**options) -> MultiSpeakerLearner:
    torch.manual_seed(0)
    learner = MultiSpeakerLearner(**SECTIONS, learner={"name": "multispeaker", **options})
    with torch.no_grad():  # non-trivial conditional norms, so the adapted parameters carry gradient
        for name, p in learner.named_parameters():
            if ".scale." in name or ".shift." in name:
                p.normal_(std=0.2)
    return learner.double().eval()


def support(n: int = 4, seed: int = 1) -> UtteranceBatch:
    """``n`` utterances, padded; the last one shorter when there are several."""
    g = torch.Generator().manual_seed(seed)
    short = n > 1
    return UtteranceBatch(tokens=torch.randint(2, 40, (n, 5), generator=g),
                          token_lengths=torch.tensor([5] * (n - 1) + [4 if short else 5]),
                          mels=torch.randn(n, 14, 12, generator=g, dtype=torch.float64) - 4,
                          mel_lengths=torch.tensor([14] * (n - 1) + [11 if short else 14]),
                          speaker_ids=torch.full((n,), -1), speakers=["x"] * n, utterance_ids=[f"u{i}" for i in range(n)])


def drift(learner: MultiSpeakerLearner, state) -> float:
    """Squared L2 distance of the adapted model parameters from the learner's own."""
    own = learner.adaptable_parameters()
    return float(sum(((v - own[n].detach()) ** 2).sum() for n, v in state.params.items()))


def test_the_anchor_adds_its_pull_to_the_support_loss() -> None:
    """One step of Adam on the anchored loss equals one step on L1 + w * sum((theta - theta_0)^2), by hand,
    after a first step has moved the parameters off the start (where the pull has no gradient)."""
    weight, lr, batch = 50.0, 0.05, support()
    learner = baseline(adapt_anchor=weight)
    two = learner.adapt(batch, steps=2, lr=lr)
    # by hand: the same two Adam steps
    start = learner.adapt(batch, steps=0)
    speaker = start.speaker.clone().requires_grad_(True)
    initial = {n: p.detach().clone() for n, p in learner.adaptable_parameters().items()}
    params = {n: p.clone().requires_grad_(True) for n, p in initial.items()}
    opt = torch.optim.Adam([speaker, *params.values()], lr=lr)
    durations = learner.align(batch)
    for _ in range(2):
        out = learner.run_model(batch, speaker.expand(len(batch), -1), params, durations)
        loss = masked_l1(out.mel, batch.mels, batch.mel_lengths)
        loss = loss + weight * sum(((p - initial[n]) ** 2).sum() for n, p in params.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.allclose(two.speaker, speaker.detach())
    assert all(torch.allclose(two.params[n], p.detach()) for n, p in params.items())
    plain = baseline().adapt(batch, steps=2, lr=lr)
    assert not all(torch.allclose(two.params[n], plain.params[n]) for n in params)  # the pull changed the step


def test_a_strong_anchor_keeps_the_adapted_parameters_near_their_start() -> None:
    batch = support()
    free, held = baseline().adapt(batch, steps=15, lr=0.05), baseline(adapt_anchor=1e4).adapt(batch, steps=15, lr=0.05)
    assert drift(baseline(), held) < 0.2 * drift(baseline(), free)
    assert not torch.allclose(held.speaker, baseline().adapt(batch, steps=0).speaker)  # the voice still adapts


def test_holdout_returns_the_step_with_the_lowest_held_out_loss() -> None:
    """Early stopping: the returned state is, among plain adaptation on the first K-1 utterances for
    0..steps steps, the one whose mel loss on the K-th is lowest."""
    batch, steps, lr = support(4), 8, 0.5  # held-out loss falls to step 7, then rises
    learner = baseline()
    chosen = baseline(adapt_holdout=True).adapt(batch, steps=steps, lr=lr)
    fit, held = batch.select([0, 1, 2]), batch.select([3])
    held_durations = learner.align(held)
    # the start comes from all K (the baseline's mean voice does not depend on them); the steps fit K-1
    candidates = [learner.adapt(fit, steps=n, lr=lr) for n in range(steps + 1)]
    with torch.no_grad():
        losses = [float(learner.support_mel_loss(held, s.speaker, s.params or None, held_durations)) for s in candidates]
    step = min(range(len(losses)), key=losses.__getitem__)
    assert 0 < step < steps  # stopped early, past the start: the case this test is about
    best = candidates[step]
    assert torch.allclose(chosen.speaker, best.speaker)
    assert all(torch.allclose(chosen.params.get(n, p), p) for n, p in best.params.items())


def test_holdout_with_a_rate_that_only_hurts_returns_the_start() -> None:
    batch = support(4)
    start = baseline().adapt(batch, steps=0)
    chosen = baseline(adapt_holdout=True).adapt(batch, steps=3, lr=50.0)  # every step overshoots
    assert torch.equal(chosen.speaker, start.speaker) and not chosen.params


def test_holdout_with_one_utterance_adapts_on_it() -> None:
    batch = support(1)
    assert torch.allclose(baseline(adapt_holdout=True).adapt(batch, steps=3, lr=0.05).speaker,
                          baseline().adapt(batch, steps=3, lr=0.05).speaker)


def test_set_adaptation_changes_how_a_loaded_learner_adapts() -> None:
    learner = baseline()
    learner.set_adaptation({"adapt_params": [], "adapt_anchor": 2.0, "adapt_holdout": True})
    assert learner.adaptable_parameters() == {} and learner.config.adapt_anchor == 2.0 and learner.config.adapt_holdout
    assert not learner.adapt(support(), steps=2, lr=0.05).params  # only the speaker vector adapted


@pytest.mark.parametrize("options, message", [
    ({"adapt_anchr": 1.0}, "adaptation option 'adapt_anchr' is not one of"),
    ({"inner_lr": 1.0}, "adaptation option 'inner_lr' is not one of"),
    ({"adapt_anchor": -1.0}, "adapt_anchor must be >= 0, got -1.0"),
    ({"adapt_anchor": "strong"}, "learner.adapt_anchor"),
    ({"adapt_params": ["nothing.*"]}, "match no model parameter"),
])
def test_bad_adaptation_options_fail_in_one_line(options: dict, message: str) -> None:
    with pytest.raises(LightningTTSError, match=message) as err:
        baseline().set_adaptation(options)
    assert "\n" not in str(err.value)


def test_maml_refuses_adaptation_options() -> None:
    maml = MAMLLearner(**SECTIONS, learner={"name": "maml"})
    with pytest.raises(LightningTTSError, match="MAML adapts with its meta-learned inner loop"):
        maml.set_adaptation({"adapt_anchor": 1.0})
    with pytest.raises(LightningTTSError, match="MAML adapts with its meta-learned inner loop"):
        MAMLLearner(**SECTIONS, learner={"name": "maml", "adapt_holdout": True})


def test_own_adapt_rate_is_the_rate_adapt_uses_by_default() -> None:
    """What the experiment's tuning relies on to skip a grid rate equal to a system's own: adapting with
    ``lr=own_adapt_rate()`` gives exactly the voice of ``lr=None``; MAML's learned rates are no single rate."""
    learner, batch = baseline(adapt_lr=0.02), support()
    assert learner.own_adapt_rate() == 0.02
    default, explicit = learner.adapt(batch, steps=3), learner.adapt(batch, steps=3, lr=learner.own_adapt_rate())
    other = learner.adapt(batch, steps=3, lr=0.05)
    assert torch.equal(default.speaker, explicit.speaker)
    assert all(torch.equal(default.params[n], explicit.params[n]) for n in default.params)
    assert not torch.equal(default.speaker, other.speaker)
    maml = MAMLLearner(**SECTIONS, learner={"name": "maml"})
    assert maml.own_adapt_rate() is None
    assert MAMLLearner(**SECTIONS, learner={"name": "maml", "adapt_lr": 0.03}).own_adapt_rate() == 0.03
