"""The speaker-clustered paired bootstrap of system differences, and adaptation rates per step count, on hand-made cases."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lightning_tts.config import load_config
from lightning_tts.errors import DataError
from lightning_tts.evaluation.grid import intelligibility, query_clusters, run_evaluation
from lightning_tts.evaluation.report import intelligibility_markdown
from lightning_tts.evaluation.stats import format_rate, paired_bootstrap, paired_bootstrap_runs, rate_at


def test_two_speakers_give_the_range_of_their_means() -> None:
    # speaker a: differences 1, 1; speaker b: 2, 2 -> resampled means lie in {1, 1.5, 2}
    d = paired_bootstrap([0, 0, 0, 0], [1, 1, 2, 2], ["a", "a", "b", "b"], seed=1)
    assert d["mean"] == 1.5 and (d["ci_low"], d["ci_high"]) == (1.0, 2.0) and (d["n"], d["clusters"]) == (4, 2)


def test_clusters_not_utterances_are_resampled() -> None:
    # 5 speakers x 20 queries: identical queries within a speaker carry no extra evidence, so the CI
    # is as wide as with one query per speaker, far wider than an iid bootstrap over 100 items would be
    speaker_effects = [-1.0, 0.0, 1.0, 2.0, 3.0]
    b = [e for e in speaker_effects for _ in range(20)]
    clustered = paired_bootstrap([0.0] * 100, b, [str(s) for s in range(5) for _ in range(20)], seed=0)
    single = paired_bootstrap([0.0] * 5, speaker_effects, [str(s) for s in range(5)], seed=0)
    assert clustered["mean"] == pytest.approx(1.0)
    assert clustered["ci_low"] == pytest.approx(single["ci_low"]) and clustered["ci_high"] == pytest.approx(single["ci_high"])
    iid = np.percentile([np.mean(np.random.default_rng(i).choice(b, 100)) for i in range(2000)], [2.5, 97.5])
    assert clustered["ci_high"] - clustered["ci_low"] > 3 * (iid[1] - iid[0])


def test_nan_pairs_are_dropped_and_one_speaker_has_no_interval() -> None:
    d = paired_bootstrap([0, float("nan"), 0], [1, 5, 3], ["a", "a", "b"])
    assert d["mean"] == 2.0 and d["n"] == 2
    one = paired_bootstrap([0, 0], [1, 2], ["a", "a"])
    assert one["mean"] == 1.5 and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap([0], [1, 2], ["a", "a"])


def test_recipes_of_several_runs_resample_the_runs_too() -> None:
    items, clusters = [0.0, 0.0, 0.0, 0.0], ["a", "a", "b", "b"]
    # one run a side is the speaker-clustered bootstrap itself, draw for draw
    assert paired_bootstrap_runs([items], [[1, 1, 2, 2]], clusters, seed=4) == {
        **paired_bootstrap(items, [1, 1, 2, 2], clusters, seed=4), "runs": [1, 1]}
    # two runs of b, +1 and +3 on every item: speakers alike, so the CI is the spread of the run draws
    # ({1, 1} -> 1, {1, 2} -> 2, {2, 2} -> 3, drawn 1/4, 1/2, 1/4 of the time)
    d = paired_bootstrap_runs([items], [[1] * 4, [3] * 4], clusters, seed=0)
    assert d["mean"] == 2.0 and (d["ci_low"], d["ci_high"]) == (1.0, 3.0) and d["runs"] == [1, 2]
    # the same two runs on the reference side: the difference flips
    flipped = paired_bootstrap_runs([[1] * 4, [3] * 4], [items], clusters, seed=0)
    assert flipped["mean"] == -2.0 and (flipped["ci_low"], flipped["ci_high"]) == (-3.0, -1.0)
    # an item with a NaN in any run is dropped from every run
    nan = paired_bootstrap_runs([items], [[1, float("nan"), 1, 1], [3, 3, 5, 5]], clusters, seed=0)
    assert nan["n"] == 3 and nan["mean"] == pytest.approx((2 + 3 + 3) / 3)
    with pytest.raises(ValueError, match="needs \\(runs, items\\) scores of equal item counts"):
        paired_bootstrap_runs([items], [[1, 2]], clusters)


def _row(system: str, shots, steps, wer: list[float]) -> dict:
    return {"system": system, "shots": shots, "steps": steps, "metrics": {"wer": {"values": wer}}}


def test_word_error_rates_are_paired_against_no_adaptation_and_the_vocoder_ceiling() -> None:
    """Hand-made grid: 2 speakers x 2 queries; the adapted cell's WER minus its unadapted cell and minus
    the vocoder-ceiling row, per query, averaged; reference rows and unadapted cells get no entry."""
    clusters = query_clusters({"a": {"support": [], "query": ["a1", "a2"]}, "b": {"support": [], "query": ["b1", "b2"]}})
    assert clusters == ["a", "a", "b", "b"]
    rows = [_row("ground truth", None, None, [0.5, 0.5, 0.5, 0.5]), _row("vocoder ceiling", None, None, [0.6, 0.4, 0.8, 0.6]),
            _row("s", 5, 0, [0.2, 0.2, 0.4, 0.4]), _row("s", 5, 5, [0.6, 0.6, 0.8, 0.6])]
    entries = intelligibility(rows, clusters, seed=0)
    assert [(e["steps"], e["against"]) for e in entries] == [(5, "0 steps"), (5, "vocoder ceiling")]
    rise, ceiling = entries
    assert rise["mean"] == pytest.approx(0.35) and rise["clusters"] == 2  # (0.4 + 0.4 + 0.4 + 0.2) / 4
    assert rise["ci_low"] == pytest.approx(0.3) and rise["ci_high"] == pytest.approx(0.4)  # speaker means 0.4, 0.3
    assert ceiling["mean"] == pytest.approx(0.05)  # (0 + 0.2 + 0 + 0) / 4
    table = "\n".join(intelligibility_markdown(entries))
    assert "| s | 5 | 5 | +0.350 [+0.300, +0.400] | +0.050 [+0.000, +0.100] |" in table
    # without a recogniser (no wer) or without unadapted cells there is nothing, or only the ceiling, to compare
    assert intelligibility([{**r, "metrics": {}} for r in rows], clusters, seed=0) == []
    assert [e["against"] for e in intelligibility(rows[:2] + rows[3:], clusters, seed=0)] == ["vocoder ceiling"]
    assert intelligibility_markdown([]) == []


def test_rates_per_step_count_are_looked_up_and_shown() -> None:
    per_steps = {0: None, 5: 0.01, 20: 0.003}
    assert [rate_at(per_steps, n) for n in (0, 5, 20)] == [None, 0.01, 0.003] and rate_at(0.03, 7) == 0.03
    with pytest.raises(KeyError):
        rate_at(per_steps, 10)
    assert format_rate(None) == "of the learner" and format_rate(0.003) == "0.003"
    assert format_rate({"0": None, "20": 0.03}) == "0 steps: of the learner, 20 steps: 0.03"  # as results.json keeps it


def test_a_per_step_count_rate_must_cover_every_step_count(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"a per-step-count adaptation rate needs one rate for each of steps=\[0, 5\]"):
        run_evaluation(load_config(), ["x.ckpt"], [1], [0, 5], tmp_path / "out", adapt_lrs=[{0: None}])
