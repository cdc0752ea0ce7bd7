"""External memory with content-based addressing and least-recently-used access (LRUA), batched over tasks.

The memory-augmented neural network of Santoro et al. (2016), "Meta-Learning with Memory-Augmented
Neural Networks", section 3.1. Notation (one task; every tensor has a leading task dimension B):

- memory ``M`` (N slots x D), usage ``w^u`` (N), previous read weights ``w^r`` (N);
- content addressing (eq. 2-3): ``K(k, M_i) = k . M_i / (|k| |M_i|)``,
  ``w^r(i) = softmax_i(beta * K(k, M_i))`` with a learned sharpening ``beta = softplus(b) > 0``;
- read (eq. 4): ``r = sum_i w^r(i) M_i``;
- LRUA write (eq. 7-8): ``w^w_t = sigmoid(a) w^r_{t-1} + (1 - sigmoid(a)) w^lu_{t-1}`` with a learned
  gate ``a``; the least-used slot is cleared, then ``M_t(i) = M_{t-1}(i) + w^w_t(i) k_t``;
- usage (eq. 5): ``w^u_t = gamma w^u_{t-1} + w^r_t + w^w_t`` with the forget factor ``gamma``;
- least-used weights (eq. 6): ``w^lu_t(i) = 1`` for the slot of smallest usage, else 0;
- reset: every task starts from the learned initial memory (or zeros) with zero usage and read weights.

This module knows nothing of speech: keys and contents are D-dimensional vectors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class MemoryState:
    """The memory of B tasks.

    Attributes:
        memory: (B, N, D) slot contents.
        usage: (B, N) usage weights ``w^u``.
        read_weights: (B, N) the last read weights ``w^r`` (used by the next write).
        write_weights: (B, N) the last write weights ``w^w`` (for analysis: which slot took a write).
    """

    memory: torch.Tensor
    usage: torch.Tensor
    read_weights: torch.Tensor
    write_weights: torch.Tensor


@dataclass
class MemoryConfig:
    """Shape and options of ``ExternalMemory`` (the memory-augmented learner's ``learner.memory``; MAML's
    too, for ``speaker_start=memory``).

    Attributes:
        slots: N.
        dim: D.
        gamma: usage forget factor in [0, 1].
        learned_init: start each task from a learned (N, D) memory instead of zeros.
    """

    slots: int = 64
    dim: int = 128
    gamma: float = 0.95
    learned_init: bool = True


class ExternalMemory(nn.Module):
    """Content-addressed memory with least-recently-used writes.

    Args:
        config: shape and options (``MemoryConfig``).
        beta: initial key strength (the learned ``softplus(b)`` starts here).
        gate: initial write-gate logit ``a``.
    """

    def __init__(self, config: MemoryConfig, beta: float = 5.0, gate: float = 0.0) -> None:
        super().__init__()
        slots, dim, gamma, learned_init = config.slots, config.dim, config.gamma, config.learned_init
        if slots < 1 or dim < 1:
            raise ValueError(f"memory needs slots >= 1 and dim >= 1, got {slots} x {dim}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"memory gamma must be in [0, 1], got {gamma}")
        self.slots, self.dim, self.gamma = slots, dim, gamma
        self.beta_raw = nn.Parameter(torch.tensor(float(beta)).expm1().log())  # softplus^-1(beta)
        self.gate = nn.Parameter(torch.tensor(float(gate)))
        self.init_memory = nn.Parameter(1e-2 * torch.randn(slots, dim)) if learned_init else None

    @property
    def beta(self) -> torch.Tensor:
        """The key strength ``softplus(b)`` (> 0)."""
        return F.softplus(self.beta_raw)

    def reset(self, batch: int, device: torch.device | str | None = None,
              dtype: Optional[torch.dtype] = None) -> MemoryState:
        """A fresh memory for each of ``batch`` tasks (on the module's device and dtype by default)."""
        device = device if device is not None else self.gate.device
        dtype = dtype if dtype is not None else self.gate.dtype
        if self.init_memory is not None:
            memory = self.init_memory.to(device=device, dtype=dtype)[None].expand(batch, -1, -1)
        else:
            memory = torch.zeros(batch, self.slots, self.dim, device=device, dtype=dtype)
        zeros = torch.zeros(batch, self.slots, device=device, dtype=dtype)
        return MemoryState(memory, zeros, zeros.clone(), zeros.clone())

    def address(self, keys: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Content weights ``softmax(beta * cos(k, M_i))``.

        Args:
            keys: (B, ..., D) keys (any number of middle dimensions, e.g. a key per phone).
            memory: (B, N, D).

        Returns:
            (B, ..., N) weights summing to 1 over N.
        """
        b, d = keys.shape[0], keys.shape[-1]
        flat = F.normalize(keys.reshape(b, -1, d), dim=-1)  # (B, K, D)
        cos = flat @ F.normalize(memory, dim=-1).transpose(1, 2)  # (B, K, N)
        return torch.softmax(self.beta * cos, dim=-1).reshape(*keys.shape[:-1], memory.shape[1])

    @staticmethod
    def read(weights: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Read vectors ``r = sum_i w(i) M_i``: weights (B, ..., N), memory (B, N, D) -> (B, ..., D)."""
        b, n = weights.shape[0], weights.shape[-1]
        return (weights.reshape(b, -1, n) @ memory).reshape(*weights.shape[:-1], memory.shape[-1])

    def least_used(self, usage: torch.Tensor) -> torch.Tensor:
        """(B, N) usage -> (B, N) one-hot of the least-used slot ``w^lu`` (first on ties)."""
        return F.one_hot(usage.argmin(dim=-1), self.slots).to(usage.dtype)

    def write(self, state: MemoryState, key: torch.Tensor, mask: Optional[torch.Tensor] = None) -> MemoryState:
        """One LRUA write of ``key`` per task, then the read that sets the next write's ``w^r``.

        Args:
            state: the memory before the write.
            key: (B, D) what to write.
            mask: (B,) False where a task has nothing to write at this step (its state is unchanged).

        Returns:
            The memory after the write.
        """
        lu = self.least_used(state.usage)  # (B, N), w^lu_{t-1}
        g = torch.sigmoid(self.gate)
        write_weights = g * state.read_weights + (1 - g) * lu  # (B, N), w^w_t
        cleared = state.memory * (1 - lu)[:, :, None]  # the least-used slot is erased before writing
        memory = cleared + write_weights[:, :, None] * key[:, None, :]  # (B, N, D)
        read_weights = self.address(key, memory)  # (B, N), w^r_t
        usage = self.gamma * state.usage + read_weights + write_weights  # (B, N), w^u_t
        if mask is None:
            return MemoryState(memory, usage, read_weights, write_weights)
        m = mask.to(memory.dtype)
        keep = lambda new, old: torch.lerp(old, new, m.view(-1, *[1] * (new.dim() - 1)))  # noqa: E731
        return MemoryState(keep(memory, state.memory), keep(usage, state.usage),
                           keep(read_weights, state.read_weights), keep(write_weights, torch.zeros_like(write_weights)))

    def write_sequence(self, state: MemoryState, keys: torch.Tensor, mask: Optional[torch.Tensor] = None) -> MemoryState:
        """Write keys (B, S, D) in order; ``mask`` (B, S) False on padding."""
        for t in range(keys.shape[1]):
            state = self.write(state, keys[:, t], None if mask is None else mask[:, t])
        return state

    def write_tasks(self, vectors: torch.Tensor, mask: torch.Tensor, tasks: int) -> MemoryState:
        """Fresh memories for ``tasks`` tasks, each written with its rows' vectors in order.

        Args:
            vectors: (T*K, S, D) vectors of K items per task (task-major), S per item.
            mask: (T*K, S) False on padding.
            tasks: T.

        Returns:
            The T memories after the writes.
        """
        shots = vectors.shape[0] // tasks
        keys = vectors.reshape(tasks, shots * vectors.shape[1], -1)  # (T, K*S, D)
        state = self.reset(tasks, vectors.device, vectors.dtype)
        return self.write_sequence(state, keys, mask.reshape(tasks, -1))

    def read_with_key(self, key: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """The read of one key (D,) from each memory (B, N, D) -> (B, D)."""
        key = key.to(memory.dtype).expand(memory.shape[0], -1)  # (B, D)
        return self.read(self.address(key, memory), memory)


def select_tasks(state: MemoryState, index: torch.Tensor) -> MemoryState:
    """The memories of tasks ``index`` (e.g. one row per query utterance)."""
    return MemoryState(state.memory[index], state.usage[index], state.read_weights[index], state.write_weights[index])
