"""The few-shot grid's speakers shared among worker processes (``fewshot.workers``).

Each speaker's cells (adapt, synthesise, vocode, score) depend on that speaker alone, so the speakers
are cut into contiguous groups, one per process, every process runs the whole grid on its group, and
the rows are joined query by query in the original speaker order. A worker process runs torch with
one thread: its numbers are the same for any number of workers (and equal to one process run with
one thread, e.g. ``OMP_NUM_THREADS=1``); they can differ in the last digits from a run with several
threads per process, whose sums are ordered differently.
"""
from __future__ import annotations

import os
import queue as queue_module
import traceback
from collections import Counter
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

import torch

from lightning_tts.errors import ConfigError, LightningTTSError
from lightning_tts.evaluation.stats import mean_ci

T = TypeVar("T")
#: Called with a finished cell's description (as ``Evaluator``'s ``progress``).
Progress = Callable[[str], None]

_PROGRESS: Optional[Any] = None  # a worker process's queue back to the parent


def grid_workers(requested: int) -> int:
    """The processes ``fewshot.workers`` asks for: ``requested``, or one per CPU core this process may
    use for 0 (callers cap it at the number of speakers).

    Raises:
        ConfigError: ``requested`` below 0.
    """
    if requested < 0:
        raise ConfigError(f"fewshot.workers must be >= 0 (0: one per CPU core), got {requested}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return requested or cores


def split_evenly(items: Sequence[T], parts: int) -> list[list[T]]:
    """``items`` cut into ``parts`` contiguous groups whose sizes differ by at most one (larger first)."""
    size, extra = divmod(len(items), parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + size + (i < extra))
    return [list(items[a:b]) for a, b in zip(bounds, bounds[1:])]


def merge_rows(parts: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row list from the row lists of speaker groups (each the same cells in the same order): every
    metric's per-query ``values`` joined group after group, and its mean and CI recomputed.

    Raises:
        ValueError: the groups' rows are not the same cells in the same order.
    """
    cells = [[(r["system"], r["shots"], r["steps"]) for r in rows] for rows in parts]
    if any(c != cells[0] for c in cells):
        raise ValueError("merge_rows: the speaker groups scored different cells")
    merged = []
    for rows in zip(*parts):
        metrics = {m: mean_ci([v for r in rows for v in r["metrics"][m]["values"]]) for m in rows[0]["metrics"]}
        merged.append({**rows[0], "metrics": metrics})
    return merged


def order_entries(entries: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]],
                  speakers: Sequence[str]) -> list[dict[str, Any]]:
    """Sample entries (``SampleWriter.entries``) of several speaker groups in the order one process
    writes them: by grid row, then speaker, then the query's place among the kept ones."""
    row_index = {(r["system"], r["shots"], r["steps"]): i for i, r in enumerate(rows)}
    speaker_index = {s: i for i, s in enumerate(speakers)}
    seen: Counter[tuple[str, Any, Any, str]] = Counter()
    keyed = []
    for e in entries:  # within one group and cell, entries come in query order
        cell = (e["system"], e["shots"], e["steps"], e["speaker"])
        keyed.append(((row_index[cell[:3]], speaker_index[e["speaker"]], seen[cell]), e))
        seen[cell] += 1
    return [e for _, e in sorted(keyed, key=lambda pair: pair[0])]


#: Thread-count variables of the numeric libraries; a child process reads them when it loads them.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextmanager
def _one_thread_environment() -> Iterator[None]:
    """Inside the block, processes started get ``THREAD_VARIABLES`` = 1 (this process's own values are
    restored after it): without them each worker's BLAS would start a thread per core besides torch's one."""
    before = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: "1" for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _worker(fn: Callable[[Any], Any], index: int, job: Any, messages: Any) -> None:
    """A worker process: one torch thread; runs ``fn(job)`` and sends back ("result", index, value) or
    ("error", index, exception), and ("progress", description) for each finished cell."""
    global _PROGRESS
    torch.set_num_threads(1)
    _PROGRESS = messages
    try:
        result = fn(job)
    except LightningTTSError as err:  # the user's error: raised in the parent as it is
        messages.put(("error", index, err))
        return
    except BaseException:  # noqa: BLE001 - a bug: its traceback goes back as text (it may not pickle)
        messages.put(("error", index, RuntimeError(f"in evaluation worker {index + 1}:\n{traceback.format_exc()}")))
        return
    messages.put(("result", index, result))


def report_progress(description: str) -> None:
    """In a worker process: tell the parent a cell of this group is done (a no-op elsewhere)."""
    if _PROGRESS is not None:
        _PROGRESS.put(("progress", description))


def run_in_processes(fn: Callable[[T], Any], jobs: Sequence[T], progress: Optional[Progress] = None) -> list[Any]:
    """``fn(job)`` for every job, each in its own spawned process (one torch thread each); results in
    job order. ``fn`` (a module-level function) reports each finished cell with ``report_progress``;
    ``progress`` is called once per cell, when every job has finished it. The first job to fail stops
    the others, and its error is raised here.

    Raises:
        LightningTTSError: a job's own error (re-raised as it was), or a worker process that died
            without an answer.
    """
    context = get_context("spawn")  # fork after torch's thread pools exist can hang; spawn starts clean
    messages = context.Queue()
    processes = [context.Process(target=_worker, args=(fn, i, job, messages), daemon=True) for i, job in enumerate(jobs)]
    results: dict[int, Any] = {}
    reported: Counter[str] = Counter()
    try:
        with _one_thread_environment():  # read by a child's numpy/BLAS and OpenMP as they load
            for process in processes:
                process.start()
        while len(results) < len(jobs):
            try:
                message = messages.get(timeout=1.0)
            except queue_module.Empty:
                dead = [i for i, p in enumerate(processes) if i not in results and not p.is_alive()]
                if dead and messages.empty():
                    code = processes[dead[0]].exitcode
                    raise LightningTTSError(f"evaluation worker {dead[0] + 1} of {len(jobs)} died (exit code {code}) "
                                            f"without an answer; run with fewshot.workers=1 to see why")
                continue
            if message[0] == "progress":
                reported[message[1]] += 1
                if reported[message[1]] == len(jobs) and progress is not None:
                    progress(message[1])
            elif message[0] == "error":
                raise message[2]
            else:
                results[message[1]] = message[2]
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
    return [results[i] for i in range(len(jobs))]
