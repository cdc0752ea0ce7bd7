"""MAML: meta-gradients against independent references, subset adaptation, learnable rates."""
from __future__ import annotations

import higher
import pytest
import torch
from torch.func import functional_call

from lightning_tts.data.tasks import Task, TaskBatch, UtteranceBatch
from lightning_tts.errors import LightningTTSError
from lightning_tts.learners.maml import MAMLLearner
from lightning_tts.text import SYMBOLS

TINY = {"dim": 16, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "ffn_dim": 32, "kernel_size": 3,
        "dropout": 0.0, "speaker_dim": 4, "predictor_channels": 8, "aligner_channels": 8}
FEATURES = {"sample_rate": 16000, "n_fft": 1024, "hop_length": 256, "win_length": 1024, "n_mels": 12, "fmin": 0.0,
            "fmax": 8000.0, "pitch": False, "energy": False}
OPTIM = {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.98], "warmup_steps": 0,
         "scheduler": "constant", "min_lr_ratio": 1.0}


def tiny_learner(**kw) -> MAMLLearner:
    torch.manual_seed(0)
    learner = MAMLLearner(symbols=SYMBOLS, speakers=["a", "b"], features=FEATURES, model=TINY, loss={}, optim=OPTIM,
                          learner={"name": "maml", "inner_steps": 2, "inner_lr": 0.3, **kw})
    with torch.no_grad():  # non-trivial conditional norms, so every path carries gradient
        for name, p in learner.named_parameters():
            if ".scale." in name or ".shift." in name:
                p.normal_(std=0.2)
    return learner.double().eval()


def tiny_batch(n: int, seed: int) -> UtteranceBatch:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, 40, (n, 5), generator=g)
    return UtteranceBatch(tokens=tokens, token_lengths=torch.tensor([5] * (n - 1) + [4]),
                          mels=torch.randn(n, 14, 12, generator=g, dtype=torch.float64) - 4,
                          mel_lengths=torch.tensor([14] * (n - 1) + [11]), speaker_ids=torch.full((n,), -1),
                          speakers=["x"] * n, utterance_ids=[f"u{i}" for i in range(n)])


TASK = Task("x", tiny_batch(3, 1), tiny_batch(2, 2))


ENCODER_START = {"speaker_start": "encoder", "encoder": {"channels": 6, "layers": 1, "dim": 5, "window": 8}}
MEMORY_START = {"speaker_start": "memory", "memory": {"slots": 4, "dim": 5}, "writer": {"channels": 6, "layers": 1, "segment": 4}}


def meta_gradient(learner: MAMLLearner, first_order: bool, task: Task = TASK) -> dict[str, torch.Tensor]:
    learner.zero_grad()
    learner.meta_losses(task, first_order=first_order)["loss"].backward()
    return {n: p.grad.clone() for n, p in learner.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("options", [{"backend": "higher"}, {"backend": "func"}, ENCODER_START, MEMORY_START,
                                     {"inner_lr_shape": "element"}, {**ENCODER_START, "speaker_consistency": 0.5}],
                         ids=["higher", "func", "func-encoder-start", "func-memory-start", "func-element-rates",
                              "func-speaker-consistency"])
def test_second_order_meta_gradient_matches_finite_differences(options: dict) -> None:
    learner = tiny_learner(**options)
    grads = meta_gradient(learner, first_order=False)
    params = {n: p for n, p in learner.named_parameters() if p.requires_grad}
    if options.get("speaker_consistency"):  # the judge is a constant in its term (a stop-gradient): the
        # encoder's meta-gradient leaves that path out by design, so its directions are not compared here
        params = {n: p for n, p in params.items() if not n.startswith("encoder.")}
    g = torch.Generator().manual_seed(5)
    for _ in range(3):  # random directions over every meta-parameter
        direction = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}
        analytic = sum(float((grads[n] * direction[n]).sum()) for n in params)
        eps = 1e-6
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                for n, p in params.items():
                    p.add_(sign * eps * direction[n])
            values.append(float(learner.meta_losses(TASK)["loss"].detach()))
            with torch.no_grad():
                for n, p in params.items():
                    p.sub_(sign * eps * direction[n])
        numeric = (values[0] - values[1]) / (2 * eps)
        assert numeric == pytest.approx(analytic, rel=1e-4, abs=1e-7)


def test_backends_agree_and_every_meta_parameter_gets_gradient() -> None:
    for first_order in (False, True):
        a = meta_gradient(tiny_learner(backend="higher"), first_order)
        b = meta_gradient(tiny_learner(backend="func"), first_order)
        for name in a:
            assert torch.allclose(a[name], b[name], rtol=1e-9, atol=1e-12), name
            assert a[name].abs().sum() > 0, f"no meta-gradient reaches {name}"


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("start, prefixes", [(ENCODER_START, ("encoder.", "speaker_proj.")),
                                             (MEMORY_START, ("writer.", "memory.", "speaker_key", "speaker_out."))],
                         ids=["encoder", "memory"])
def test_a_zero_shot_start_depends_on_the_support_set_and_is_meta_trained(
        first_order: bool, start: dict, prefixes: tuple[str, ...]) -> None:
    """``speaker_start=encoder|memory``: each voice starts from its own zero-shot estimate; the
    meta-gradient reaches every module of the estimate (through the inner steps), and not the unused
    initial vector."""
    learner = tiny_learner(**start)
    starts = [learner.adapt(tiny_batch(3, seed), steps=0).speaker for seed in (1, 7)]
    assert not torch.allclose(starts[0], starts[1])
    grads = meta_gradient(learner, first_order)
    assert "speaker_init" not in grads
    for prefix in prefixes:
        reached = [n for n, g in grads.items() if n.startswith(prefix) and g.abs().sum() > 0]
        assert reached, f"no meta-gradient reaches {prefix}*"


@pytest.mark.parametrize("start", [ENCODER_START, MEMORY_START, {}], ids=["encoder", "memory", "learned"])
def test_the_batched_start_of_a_meta_batch_equals_each_task_started_alone(start: dict) -> None:
    """``training_step`` computes every task's start in one pass over the meta-batch's support rows
    (padded to the longest task); each must equal the start of that task alone (its own padding),
    and so must the meta-gradient taken from it."""
    learner = tiny_learner(**start)
    support = tiny_batch(9, 3)
    support.mel_lengths = torch.tensor([14, 14, 11, 9, 8, 9, 12, 6, 10])  # task 1 is 5 frames shorter
    batch = TaskBatch(support=support, query=tiny_batch(6, 4), shots=3, queries=2)
    batched = learner.start_speakers(batch.support, len(batch))  # (T, speaker_dim)
    tasks = batch.tasks()
    assert tasks[1].support.mels.shape[1] == 9  # alone, the task carries less padding than in the batch
    for task, start_vector in zip(tasks, batched):
        assert torch.allclose(start_vector, learner.start_speaker(task.support), rtol=0, atol=1e-12)
    learner.zero_grad()
    learner.meta_losses(tasks[1], start=batched[1])["loss"].backward()
    from_batch = {n: p.grad.clone() for n, p in learner.named_parameters() if p.requires_grad}
    alone = meta_gradient(learner, first_order=False, task=tasks[1])  # its start from its own support set
    assert from_batch.keys() == alone.keys()
    for name in alone:
        assert torch.allclose(from_batch[name], alone[name], rtol=1e-9, atol=1e-12), name


@pytest.mark.parametrize("start", [ENCODER_START, MEMORY_START, {}, {"backend": "higher"}],
                         ids=["encoder", "memory", "learned", "learned-higher"])
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\(\)`")
def test_a_meta_batch_loss_and_gradient_are_the_mean_over_its_tasks_alone(start: dict) -> None:
    """``training_step`` (every start from one batched pass, ``start_speakers``) returns the mean of the
    tasks' query losses, each task adapted alone from its own start, and so has the mean meta-gradient:
    for the zero-shot starts and for the learned vector, with either backend (``higher`` ignores the
    passed start and starts from ``speaker_init`` itself)."""
    learner = tiny_learner(**start)
    support = tiny_batch(6, 5)
    support.mel_lengths = torch.tensor([14, 14, 11, 9, 8, 12])
    batch = TaskBatch(support=support, query=tiny_batch(4, 6), shots=3, queries=2)
    learner.zero_grad()
    loss = learner.training_step(batch, 0)
    loss.backward()
    from_step = {n: p.grad.clone() for n, p in learner.named_parameters() if p.requires_grad}
    alone = [meta_gradient(learner, first_order=False, task=task) for task in batch.tasks()]
    losses = [float(learner.meta_losses(task)["loss"].detach()) for task in batch.tasks()]
    assert float(loss.detach()) == pytest.approx(sum(losses) / len(losses), rel=1e-12)
    assert from_step.keys() == alone[0].keys()
    for name in from_step:
        assert torch.allclose(from_step[name], (alone[0][name] + alone[1][name]) / 2, rtol=1e-9, atol=1e-12), name


@pytest.mark.parametrize("options, message", [
    ({"speaker_start": "table"}, "learner.speaker_start must be one of ('learned', 'encoder', 'memory'), got 'table'"),
    ({"speaker_start": "encoder", "backend": "higher"}, "learner.speaker_start=encoder needs learner.backend=func"),
    ({"speaker_start": "memory", "backend": "higher"}, "learner.speaker_start=memory needs learner.backend=func"),
    ({"inner_lr_shape": "row"}, "learner.inner_lr_shape must be one of ('tensor', 'element'), got 'row'"),
    ({"inner_lr_shape": "element", "learn_inner_lr": False},
     "learner.inner_lr_shape=element needs learner.backend=func and learner.learn_inner_lr=true"),
    ({"speaker_consistency": 0.5}, "learner.speaker_consistency must be >= 0 and needs learner.speaker_start=encoder, "
                                   "got 0.5 with speaker_start='learned'"),
    ({**ENCODER_START, "speaker_consistency": -1.0}, "learner.speaker_consistency must be >= 0 and needs "
                                                     "learner.speaker_start=encoder, got -1.0 with speaker_start='encoder'"),
])
def test_a_bad_speaker_start_fails_in_one_line(options: dict, message: str) -> None:
    with pytest.raises(LightningTTSError) as err:
        tiny_learner(**options)
    assert str(err.value) == message


def test_speaker_consistency_adds_one_minus_cosine_and_holds_the_judge_constant() -> None:
    """The term equals a hand computation (1 - cosine of the encoder's embeddings of each predicted
    query mel and of its recording, averaged) times its weight; its gradient reaches the predicted
    mels (so the acoustic model) but not the encoder's weights through the judging."""
    plain = tiny_learner(**ENCODER_START)
    weighted = tiny_learner(**ENCODER_START, speaker_consistency=0.5)
    weighted.load_state_dict(plain.state_dict())
    losses, base = weighted.meta_losses(TASK), plain.meta_losses(TASK)
    fast = weighted.inner_loop(TASK.support, weighted.inner_steps, "second")
    predicted = functional_call(weighted.net(), fast, (TASK.query,), strict=False).mel.detach().requires_grad_(True)
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(weighted.encoder(predicted, TASK.query.mel_lengths),
                                                    weighted.encoder(TASK.query.mels, TASK.query.mel_lengths), dim=-1)
    assert float(losses["speaker_consistency"]) == pytest.approx(float((1 - cos).mean()), rel=1e-9)
    assert float(losses["loss"]) == pytest.approx(float(base["loss"]) + 0.5 * float((1 - cos).mean()), rel=1e-9)
    weighted.zero_grad()
    weighted.consistency_loss(predicted, TASK.query).backward()
    assert predicted.grad is not None and predicted.grad.abs().sum() > 0
    assert all(p.grad is None for p in weighted.encoder.parameters())
    g_plain, g_weighted = meta_gradient(plain, False), meta_gradient(weighted, False)
    assert any(not torch.allclose(g_plain[n], g_weighted[n]) for n in g_plain if n.startswith("model.decoder."))


def test_second_order_differs_from_first_order() -> None:
    learner = tiny_learner()
    so, fo = meta_gradient(learner, False), meta_gradient(learner, True)
    assert max(float((so[n] - fo[n]).abs().max()) for n in so) > 1e-6


def test_first_order_matches_a_hand_computed_reference() -> None:
    learner = tiny_learner(backend="higher")
    got = meta_gradient(learner, first_order=True)
    # reference: plain SGD on detached copies, then the query-loss gradient at the adapted point
    net = learner.net()
    named = dict(net.named_parameters())
    base = {n: p.detach().clone() for n, p in named.items()}
    durations = learner.align(TASK.support)
    fast = {n: base[n].clone() for n in learner.adapted_names}
    rates = learner.inner_lrs.detach()
    grads_per_step = []
    for step in range(learner.inner_steps):
        leaf = {n: t.clone().requires_grad_(True) for n, t in fast.items()}
        out = functional_call(net, leaf, (TASK.support, durations), strict=False)
        loss = learner._mel_l1(out, TASK.support)
        grads = torch.autograd.grad(loss, list(leaf.values()))
        grads_per_step.append(grads)
        fast = {n: leaf[n].detach() - rates[step, i] * g for i, (n, g) in enumerate(zip(leaf, grads))}
    everything = {n: (fast[n] if n in fast else base[n]).clone().requires_grad_(True) for n in named}
    out = functional_call(net, everything, (TASK.query,), strict=False)
    losses = learner.criterion(out, TASK.query.mels, TASK.query.mel_lengths, TASK.query.token_lengths, 0)
    query_grads = dict(zip(everything, torch.autograd.grad(losses["loss"], list(everything.values()))))
    for name in named:
        key = "speaker_init" if name == "speaker" else name
        assert torch.allclose(got[key], query_grads[name], rtol=1e-8, atol=1e-12), name
    # d loss / d rate[step, i] = -<query grad at adapted point, inner grad of that step>
    for step in range(learner.inner_steps):
        for i, n in enumerate(learner.adapted_names):
            expected = -float((query_grads[n] * grads_per_step[step][i]).sum())
            assert float(got["inner_lrs"][step, i]) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_subset_adaptation_leaves_other_parameters_untouched() -> None:
    learner = tiny_learner(adapt_params=["decoder.0.norm2.*"])
    assert learner.adapted_names == ["speaker", "model.decoder.0.norm2.scale.weight", "model.decoder.0.norm2.scale.bias",
                                     "model.decoder.0.norm2.shift.weight", "model.decoder.0.norm2.shift.bias"]
    before = {n: p.detach().clone() for n, p in learner.named_parameters()}
    net = learner.net()
    named = dict(net.named_parameters())
    groups = [{"params": [named[n]]} for n in learner.adapted_names]
    with higher.innerloop_ctx(net, torch.optim.SGD(groups, lr=0.5), copy_initial_weights=False) as (fnet, diffopt):
        for _ in range(2):
            diffopt.step(learner._mel_l1(fnet(TASK.support, learner.align(TASK.support)), TASK.support))
        fast = dict(zip((n for n, _ in net.named_parameters()), fnet.parameters()))
    for name, tensor in fast.items():
        changed = not torch.equal(tensor.detach(), named[name].detach())
        assert changed == (name in learner.adapted_names), name
    state = learner.adapt(TASK.support, steps=3)
    assert set(state.params) == {n[len("model."):] for n in learner.adapted_names[1:]}
    assert all(torch.equal(p, before[n]) for n, p in learner.named_parameters())  # adapt never edits the model


def test_learned_rates_train_and_fixed_rates_do_not() -> None:
    assert isinstance(tiny_learner().inner_lrs, torch.nn.Parameter)
    fixed = tiny_learner(learn_inner_lr=False)
    assert "inner_lrs" not in dict(fixed.named_parameters())
    assert fixed.inner_lrs.shape == (2, len(fixed.adapted_names)) == (2, 19)  # speaker + 16 decoder + 2 mel_out
    fixed.meta_losses(TASK)["loss"].backward()


def test_element_rates_have_the_adapted_shapes_and_train_per_element() -> None:
    """Meta-SGD: one rate per adapted element and inner step; the meta-gradient differs across the
    elements of one tensor (a per-tensor rate would give them one value)."""
    learner = tiny_learner(inner_lr_shape="element")
    named = dict(learner.net().named_parameters())
    assert [tuple(r.shape) for r in learner.element_lrs] == [(2, *named[n].shape) for n in learner.adapted_names]
    learner.meta_losses(TASK)["loss"].backward()
    grad = learner.element_lrs[0].grad  # (inner_steps, speaker_dim): the speaker vector's rates
    assert grad.abs().sum() > 0 and float(grad[0].std()) > 0


def test_adaptation_reuses_the_last_rates_past_inner_steps() -> None:
    learner = tiny_learner()
    with torch.no_grad():
        learner.inner_lrs[-1].fill_(0.123)
    assert all(float(r) == pytest.approx(0.123) for r in learner.step_rates(7))
    before = float(learner.support_mel_loss(TASK.support, learner.initial_speaker(), None, learner.align(TASK.support)))
    state = learner.adapt(TASK.support, steps=6)
    after = float(learner.support_mel_loss(TASK.support, state.speaker, state.params, learner.align(TASK.support)))
    assert after < before
