"""External memory: addressing, LRUA write, usage decay, read and reset against values computed by hand."""
from __future__ import annotations

import math

import pytest
import torch

from lightning_tts.models.memory import ExternalMemory, MemoryConfig, MemoryState


def memory(beta: float = 2.0, gate: float = 0.0, gamma: float = 0.5, slots: int = 3) -> ExternalMemory:
    return ExternalMemory(MemoryConfig(slots=slots, dim=2, gamma=gamma, learned_init=False), beta=beta, gate=gate).double()


def softmax(xs: list[float]) -> list[float]:
    e = [math.exp(x) for x in xs]
    return [x / sum(e) for x in e]


def test_content_addressing_is_a_sharpened_cosine_softmax() -> None:
    mem = memory(beta=2.0)
    assert float(mem.beta.detach()) == pytest.approx(2.0)
    slots = torch.tensor([[[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]]], dtype=torch.float64)  # (1, 3, 2)
    key = torch.tensor([[2.0, 2.0]], dtype=torch.float64)  # cosines: 1/sqrt2, 1/sqrt2, -1/sqrt2
    c = 1 / math.sqrt(2)
    expected = softmax([2 * c, 2 * c, -2 * c])
    assert mem.address(key, slots)[0].tolist() == pytest.approx(expected)
    keys = key[:, None].expand(1, 4, 2)  # a key per phone: the same weights for each
    assert mem.address(keys, slots).shape == (1, 4, 3)


def test_read_is_the_weighted_sum_of_slots() -> None:
    slots = torch.tensor([[[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]]], dtype=torch.float64)
    weights = torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64)
    assert ExternalMemory.read(weights, slots)[0].tolist() == pytest.approx([0.5 - 0.5, 0.75])


def test_reset_starts_empty_or_from_the_learned_state() -> None:
    state = memory().reset(2)
    assert state.memory.shape == (2, 3, 2) and float(state.memory.abs().sum()) == 0
    assert float(state.usage.sum()) == 0 and float(state.read_weights.sum()) == 0
    learned = ExternalMemory(MemoryConfig(3, 2, learned_init=True))
    assert torch.equal(learned.reset(2).memory[1], learned.init_memory.detach())


def test_lrua_writes_and_usage_decay_by_hand() -> None:
    """Two writes into an empty 3-slot memory with gate sigmoid(0) = 0.5, beta 2, gamma 0.5."""
    mem = memory(beta=2.0, gate=0.0, gamma=0.5)
    state = mem.reset(1)
    k1 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    # step 1: usage all 0 -> least used is slot 0; previous read weights 0 -> w^w = 0.5 * lu = [0.5, 0, 0]
    s1 = mem.write(state, k1)
    assert s1.write_weights[0].tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert torch.allclose(s1.memory[0], torch.tensor([[0.5, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64))
    # read with k1 after the write: cos = [1, 0, 0] (empty slots have cosine 0)
    r1 = softmax([2.0, 0.0, 0.0])
    assert s1.read_weights[0].tolist() == pytest.approx(r1)
    # usage = 0.5 * 0 + w^r + w^w
    u1 = [r1[0] + 0.5, r1[1], r1[2]]
    assert s1.usage[0].tolist() == pytest.approx(u1)
    # step 2: least used is slot 1 (first of the tied minimum); it is cleared (already empty), then
    # w^w = 0.5 * r1 + 0.5 * [0, 1, 0]
    k2 = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    s2 = mem.write(s1, k2)
    w2 = [0.5 * r1[0], 0.5 * r1[1] + 0.5, 0.5 * r1[2]]
    assert s2.write_weights[0].tolist() == pytest.approx(w2)
    m2 = [[0.5, w2[0]], [0.0, w2[1]], [0.0, w2[2]]]
    assert torch.allclose(s2.memory[0], torch.tensor(m2, dtype=torch.float64))
    norms = [math.hypot(*row) for row in m2]
    r2 = softmax([2.0 * row[1] / n for row, n in zip(m2, norms)])
    assert s2.read_weights[0].tolist() == pytest.approx(r2)
    assert s2.usage[0].tolist() == pytest.approx([0.5 * u + r + w for u, r, w in zip(u1, r2, w2)])


def test_least_used_slot_is_erased_before_writing() -> None:
    mem = memory(gate=-50.0)  # sigmoid(-50) ~ 0: write only to the least-used slot
    state = MemoryState(memory=torch.tensor([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]], dtype=torch.float64),
                        usage=torch.tensor([[0.9, 0.1, 0.5]], dtype=torch.float64),
                        read_weights=torch.zeros(1, 3, dtype=torch.float64), write_weights=torch.zeros(1, 3, dtype=torch.float64))
    new = mem.write(state, torch.tensor([[-1.0, 4.0]], dtype=torch.float64))
    assert torch.allclose(new.memory[0], torch.tensor([[1.0, 1.0], [-1.0, 4.0], [3.0, 3.0]], dtype=torch.float64))


@torch.no_grad()
def test_masked_writes_leave_the_task_unchanged_and_batches_are_independent() -> None:
    mem = memory()
    state = mem.reset(2)
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    new = mem.write(state, keys, mask=torch.tensor([True, False]))
    assert float(new.memory[1].abs().sum()) == 0 and float(new.usage[1].sum()) == 0
    alone = mem.write(mem.reset(1), keys[:1])
    assert torch.allclose(new.memory[0], alone.memory[0]) and torch.allclose(new.usage[0], alone.usage[0])
    seq = mem.write_sequence(mem.reset(2), torch.stack([keys, keys], dim=1), torch.tensor([[True, True], [True, False]]))
    assert torch.allclose(seq.memory[1], mem.write(mem.reset(1), keys[1:]).memory[0])  # its second write was masked
    assert torch.allclose(seq.memory[0], mem.write(mem.write(mem.reset(1), keys[:1]), keys[:1]).memory[0])


def test_gradients_reach_gate_and_beta() -> None:
    mem = ExternalMemory(MemoryConfig(4, 3, learned_init=True))
    state = mem.write_sequence(mem.reset(2), torch.randn(2, 5, 3))
    out = mem.read(mem.address(torch.randn(2, 3), state.memory), state.memory).sum()
    out.backward()
    for p in (mem.gate, mem.beta_raw, mem.init_memory):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
