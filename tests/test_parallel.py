"""The few-shot grid shared among worker processes: groups, the joining of rows and samples, the worker
count, and errors coming back from a worker (the end-to-end equality is in ``test_evaluate.py``)."""
from __future__ import annotations

import math
import os

import pytest

from lightning_tts.errors import ConfigError, DataError, LightningTTSError
from lightning_tts.evaluation.parallel import (grid_workers, merge_rows, order_entries, report_progress,
                                               run_in_processes, split_evenly)


def test_speakers_are_cut_into_contiguous_groups_of_near_equal_size() -> None:
    assert split_evenly(list("abcdefg"), 3) == [["a", "b", "c"], ["d", "e"], ["f", "g"]]
    assert split_evenly([1, 2], 2) == [[1], [2]]
    assert split_evenly(list(range(24)), 5) == [list(range(0, 5)), list(range(5, 10)), list(range(10, 15)),
                                               list(range(15, 20)), list(range(20, 24))]


def _row(system: str, steps: int, values: list[float]) -> dict:
    return {"system": system, "shots": 5, "steps": steps,
            "metrics": {"mcd": {"mean": sum(values) / len(values), "values": values}}}


def test_rows_of_speaker_groups_join_query_by_query_with_statistics_recomputed() -> None:
    first = [_row("a", 0, [1.0, 2.0]), _row("a", 5, [3.0, float("nan")])]
    second = [_row("a", 0, [6.0]), _row("a", 5, [5.0])]
    merged = merge_rows([first, second])
    assert [m["metrics"]["mcd"]["values"] for m in merged][0] == [1.0, 2.0, 6.0]
    assert merged[0]["metrics"]["mcd"]["mean"] == pytest.approx(3.0)
    assert merged[0]["metrics"]["mcd"]["ci95"] == pytest.approx(1.96 * math.sqrt(7.0) / math.sqrt(3))
    nan_cell = merged[1]["metrics"]["mcd"]  # a failed query stays a failure, left out of the mean
    assert nan_cell["mean"] == pytest.approx(4.0) and nan_cell["failures"] == 1 and nan_cell["n"] == 2
    assert (merged[1]["system"], merged[1]["steps"]) == ("a", 5)
    with pytest.raises(ValueError, match="different cells"):
        merge_rows([first, [second[1], second[0]]])


def test_sample_entries_are_put_back_in_the_order_one_process_writes_them() -> None:
    rows = [{"system": "ground truth", "shots": None, "steps": None}, {"system": "b", "shots": 1, "steps": 0},
            {"system": "b", "shots": 1, "steps": 5}]

    def entry(system, shots, steps, speaker, query):
        return {"system": system, "shots": shots, "steps": steps, "speaker": speaker, "query": query}

    group_1 = [entry("ground truth", None, None, "s1", "q2"), entry("ground truth", None, None, "s1", "q1"),
               entry("b", 1, 0, "s1", "q2"), entry("b", 1, 5, "s1", "q2")]
    group_2 = [entry("ground truth", None, None, "s2", "q9"), entry("b", 1, 0, "s2", "q9"), entry("b", 1, 5, "s2", "q9")]
    ordered = order_entries(group_2 + group_1, rows, ["s1", "s2"])
    assert [(e["system"], e["steps"], e["speaker"], e["query"]) for e in ordered] == [
        ("ground truth", None, "s1", "q2"), ("ground truth", None, "s1", "q1"), ("ground truth", None, "s2", "q9"),
        ("b", 0, "s1", "q2"), ("b", 0, "s2", "q9"), ("b", 5, "s1", "q2"), ("b", 5, "s2", "q9")]


def test_the_worker_count() -> None:
    cores = len(os.sched_getaffinity(0))
    assert grid_workers(3) == 3 and grid_workers(1) == 1 and grid_workers(0) == cores
    with pytest.raises(ConfigError, match=r"fewshot.workers must be >= 0 \(0: one per CPU core\), got -1"):
        grid_workers(-1)


# jobs for worker processes: module-level, so that a spawned process can import them by name
def _square_with_progress(x: int) -> int:
    import torch

    report_progress("cell one")
    report_progress("cell two")
    return x * x * torch.get_num_threads() * int(os.environ["OMP_NUM_THREADS"])  # both 1 in a worker


def _fails_on_two(x: int) -> int:
    if x == 2:
        raise DataError("job 2 names the bad file f.wav")
    return x


def _bug(x: int) -> int:
    return {}[x]


def _dies(x: int) -> int:
    os._exit(3)


def test_jobs_run_in_one_thread_processes_and_report_each_cell_once() -> None:
    heard: list[str] = []
    assert run_in_processes(_square_with_progress, [1, 2, 3], heard.append) == [1, 4, 9]
    assert heard == ["cell one", "cell two"]  # once each, when all three jobs had finished the cell
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "7"  # the workers get 1; this process keeps its own value
    try:
        assert run_in_processes(_square_with_progress, [2]) == [4]
        assert os.environ["OMP_NUM_THREADS"] == "7"
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = before


def test_a_worker_error_comes_back_as_it_was_and_a_dead_worker_in_one_line() -> None:
    with pytest.raises(DataError, match="job 2 names the bad file f.wav"):
        run_in_processes(_fails_on_two, [1, 2, 3])
    with pytest.raises(RuntimeError, match="KeyError"):  # a bug keeps its traceback, as text
        run_in_processes(_bug, [1])
    with pytest.raises(LightningTTSError, match=r"evaluation worker 1 of 1 died \(exit code 3\)"):
        run_in_processes(_dies, [1])
