"""Sampler guarantees: K and Q honoured, support/query disjoint, determinism, rank disjointness."""
import numpy as np
import torch

from lightning_tts.data.tasks import (
    FixedBatchSampler,
    SpeakerGroupSampler,
    TaskCollator,
    UtteranceBatchSampler,
    fixed_groups,
    group_by_speaker,
)

SPEAKERS = [f"s{i}" for i in range(12) for _ in range(10 + i)]  # s0 has 10 utterances ... s11 has 21
BY_SPEAKER = group_by_speaker(SPEAKERS)


def _tasks(sampler: SpeakerGroupSampler, k: int) -> list[tuple[str, frozenset, frozenset]]:
    out = []
    for batch in sampler:
        for g in range(0, len(batch), sampler.group_size):
            group = batch[g: g + sampler.group_size]
            out.append((SPEAKERS[group[0]], frozenset(group[:k]), frozenset(group[k:])))
    return out


def test_episodic_groups_honour_k_q_and_are_disjoint() -> None:
    k, q = 5, 6  # s0 (10 utterances) is too small for K+Q = 11
    sampler = SpeakerGroupSampler(BY_SPEAKER, k + q, groups_per_batch=4, batches_per_epoch=20, seed=1)
    assert "s0" not in sampler.speakers
    for batch in sampler:
        assert len(batch) == 4 * (k + q)
        groups = [batch[g: g + k + q] for g in range(0, len(batch), k + q)]
        assert len({SPEAKERS[g[0]] for g in groups}) == 4  # distinct speakers in a batch
        for g in groups:
            assert len(set(g)) == k + q and len({SPEAKERS[i] for i in g}) == 1
            assert not set(g[:k]) & set(g[k:])


def test_determinism_and_epochs() -> None:
    def draw(seed: int, epoch: int) -> list[list[int]]:
        s = SpeakerGroupSampler(BY_SPEAKER, 8, 3, 5, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert draw(0, 0) == draw(0, 0)
    assert draw(0, 0) != draw(0, 1) and draw(0, 0) != draw(1, 0)


def test_ranks_get_disjoint_tasks() -> None:
    per_rank = []
    for rank in range(3):
        s = SpeakerGroupSampler(BY_SPEAKER, 8, 2, 10, seed=4, rank=rank, world_size=3)
        s.set_epoch(2)
        per_rank.append(_tasks(s, 4))
    for a in range(3):
        for b in range(a + 1, 3):
            assert not set(per_rank[a]) & set(per_rank[b])
    # within one global step the 6 groups have 6 distinct speakers
    first = [SpeakerGroupSampler(BY_SPEAKER, 8, 2, 1, seed=4, rank=r, world_size=3) for r in range(3)]
    speakers = [SPEAKERS[i] for s in first for i in next(iter(s))[::8]]
    assert len(set(speakers)) == 6


def test_utterance_sampler_is_a_sharded_permutation() -> None:
    n = 100
    lengths = np.random.default_rng(0).uniform(1, 10, n)
    seen = []
    for rank in range(2):
        s = UtteranceBatchSampler(list(range(n)), lengths, batch_size=8, seed=0, rank=rank, world_size=2)
        batches = list(s)
        assert len(batches) == len(s) == 6
        seen.append({i for b in batches for i in b})
        spread = np.mean([np.ptp(lengths[b]) for b in batches])
        assert spread < 0.5 * np.ptp(lengths)  # bucketing: similar lengths in a batch
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 96


def test_fixed_groups_and_sharding() -> None:
    groups = fixed_groups(BY_SPEAKER, 11, 2, seed=0)
    assert groups == fixed_groups(BY_SPEAKER, 11, 2, seed=0) and len(groups) == 22  # s0 left out
    batches = [g for g in groups]
    ranks = [list(FixedBatchSampler(batches, r, 2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 11
    assert sorted(map(tuple, ranks[0] + ranks[1])) == sorted(map(tuple, batches))


def test_task_collator_splits_support_and_query() -> None:
    items = [{"tokens": torch.ones(3 + i, dtype=torch.long), "mel": torch.zeros(10 + i, 4), "speaker_id": t,
              "speaker": f"s{t}", "utterance_id": f"u{t}_{i}"} for t in range(2) for i in range(5)]
    batch = TaskCollator(shots=2, queries=3)(items)
    assert len(batch) == 2 and batch.support.mels.shape == (4, 11, 4) and batch.query.mels.shape == (6, 14, 4)
    task = batch.task(1)
    assert task.speaker == "s1" and task.support.utterance_ids == ["u1_0", "u1_1"]
    assert task.query.mels.shape == (3, 14, 4) and task.support.mels.shape == (2, 11, 4)
    assert task.query.mel_mask.sum().item() == 12 + 13 + 14
