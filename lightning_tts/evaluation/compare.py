"""``compare``: paired differences between the systems of one or more ``evaluate`` results files, against
a reference system of your choice.

``evaluate`` pairs every system against its first checkpoint. Here any system is the reference, and
systems of different evaluations can be paired as long as they scored the same test speakers on the same
support and query utterances (the ``speakers`` record of ``results.json``, and the same shots x steps
cells): e.g. a baseline trained again with another seed, against the meta-learners of an earlier run. A
subset of the test speakers (``speakers``) restricts every file to those speakers' queries: e.g. the speakers
a larger second evaluation added, alone, or the speakers two evaluations of different sizes share. The
differences are ``grid.paired_differences``'s (speaker-clustered bootstrap, the first file's seed), so on a
single file with its first system as the reference they are the numbers ``evaluate`` wrote. Pools (``pools``)
stand for a recipe trained several times (e.g. with other seeds): the per-query mean of their runs, compared
like any system or used as the reference, with a CI that resamples the runs as well as the speakers
(``stats.paired_bootstrap_runs``): recipe against recipe, run-to-run spread included.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from lightning_tts.errors import DataError
from lightning_tts.evaluation.grid import paired_differences, query_clusters
from lightning_tts.evaluation.report import differences_markdown
from lightning_tts.evaluation.stats import mean_ci


def read_results(path: str | Path) -> dict[str, Any]:
    """One ``results.json`` written by ``evaluate``.

    Raises:
        DataError: missing, not JSON, or without the grid's keys (naming the file and the key).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such results file (evaluate writes <out>/results.json)")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a JSON results file ({err})") from err
    missing = [k for k in ("rows", "speakers", "metrics", "seed") if not isinstance(results, dict) or k not in results]
    if missing:
        raise DataError(f"{path}: not an evaluate results file (no {missing[0]!r})")
    return results


def speaker_queries(results: dict[str, Any], path: str | Path, speakers: Sequence[str]) -> dict[str, Any]:
    """``results`` with only the queries of ``speakers``, in that speaker order: its ``speakers`` record and
    every row's per-query values (each cell's mean and CI recomputed from them).

    Raises:
        DataError: a speaker ``results`` did not evaluate (naming the file, the speaker and those it has).
    """
    own = results["speakers"]
    missing = [s for s in speakers if s not in own]
    if missing:
        raise DataError(f"{path}: no test speaker {missing[0]!r} (it evaluated {', '.join(own)})")
    clusters = query_clusters(own)  # the speaker of each query, in grid order
    index = [i for s in speakers for i, c in enumerate(clusters) if c == s]  # (kept queries,) grid positions
    rows = [{**row, "metrics": {m: mean_ci([cell["values"][i] for i in index]) for m, cell in row["metrics"].items()}}
            for row in results["rows"]]
    return {**results, "speakers": {s: own[s] for s in speakers}, "rows": rows}


def merged_rows(files: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The grid rows (reference rows left out) of every (label, results) pair; a system name found in
    more than one file becomes ``<name>@<label>`` in every file that has it."""
    count: dict[str, int] = {}
    for _, results in files:
        for name in dict.fromkeys(r["system"] for r in results["rows"] if r["shots"] is not None):
            count[name] = count.get(name, 0) + 1
    return [{**r, "system": r["system"] if count[r["system"]] == 1 else f"{r['system']}@{label}"}
            for label, results in files for r in results["rows"] if r["shots"] is not None]


def pool_name(members: Sequence[str]) -> str:
    """The name a pool of ``members`` gets when none is given: ``mean(S1, S2, ...)``."""
    return f"mean({', '.join(members)})"


def pooled_rows(rows: list[dict[str, Any]], name: str, members: Sequence[str], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (K, steps) cell that every member has: the system ``name`` whose score of each query is
    the mean of the members' scores of it (NaN when any member failed on it), and whose metric cells keep
    the members' per-query scores as ``runs`` (members, queries), which the paired CI resamples
    (``stats.paired_bootstrap_runs``). Pooling runs of one recipe (e.g. several training seeds) estimates
    what the recipe gives on average, with the spread between its runs in the interval."""
    cells = dict.fromkeys((r["shots"], r["steps"]) for r in rows if r["system"] == members[0])
    pooled = []
    for shots, steps in cells:
        found = [next((r for r in rows if r["system"] == m and (r["shots"], r["steps"]) == (shots, steps)), None)
                 for m in members]
        if any(r is None for r in found):
            continue
        runs = {metric: [r["metrics"][metric]["values"] for r in found if r is not None] for metric in metrics}
        pooled.append({"system": name, "shots": shots, "steps": steps,
                       "metrics": {metric: {**mean_ci(list(np.mean(v, axis=0))), "runs": v}  # v: (members, queries)
                                   for metric, v in runs.items()}})
    return pooled


def check_pools(pools: Mapping[str, Sequence[str]], systems: Sequence[str]) -> None:
    """Each pool names two or more different systems of the files, and no pool takes a system's name.

    Raises:
        DataError: one line naming the pool.
    """
    for name, members in pools.items():
        unknown = [m for m in members if m not in systems]
        if len(members) < 2 or len(set(members)) != len(members) or unknown:
            raise DataError(f"--pool {name}: needs two or more different systems of {', '.join(systems)}, "
                            f"got {', '.join(members)}")
        if name in systems:
            raise DataError(f"--pool {name}: a system of the files is already called {name!r}; name the pool otherwise")


def compare_results(paths: Sequence[str | Path], reference: str, metrics: Optional[Sequence[str]] = None,
                    pools: Optional[Mapping[str, Sequence[str]]] = None, speakers: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every system of ``paths`` against ``reference``, per (K, steps) cell and metric (``metrics``:
    default, those every file scored). File i's systems are ``<name>@<i>`` (1-based) when a name is in
    more than one file. ``pools``: pool name -> two or more systems whose per-query mean is one more
    system (``pooled_rows``), which may also be the reference. ``speakers``: only these test speakers'
    queries (``speaker_queries``; default: every speaker of the first file, which every file must have
    evaluated, and no other).

    Raises:
        DataError: no file, files of different speakers or queries, an unknown or repeated speaker, an
            unknown reference, pooled system or metric, a bad pool.
    """
    if not paths:
        raise DataError("compare needs at least one results file")
    loaded = [read_results(p) for p in paths]
    chosen = list(speakers) or list(loaded[0]["speakers"])
    if len(set(chosen)) != len(chosen):
        raise DataError(f"--speakers names a speaker twice: {', '.join(chosen)}")
    for path, results in zip(paths[1:], loaded[1:]):
        if not speakers and set(results["speakers"]) != set(chosen):
            raise DataError(f"{path}: other test speakers than {paths[0]}: pair them on the speakers both "
                            f"evaluated with --speakers S1,S2,...")
    loaded = [speaker_queries(results, path, chosen) for path, results in zip(paths, loaded)]
    first = loaded[0]
    for path, results in zip(paths[1:], loaded[1:]):
        if results["speakers"] != first["speakers"]:
            raise DataError(f"{path}: other test speakers or queries than {paths[0]}: only evaluations of the "
                            f"same support and query utterances can be paired")
    common = [m for m in first["metrics"] if all(m in r["metrics"] for r in loaded)]
    metrics = list(metrics) if metrics else common
    unknown = [m for m in metrics if m not in common]
    if unknown:
        raise DataError(f"metric {unknown[0]!r} is not scored in every file (they share: {', '.join(common)})")
    rows = merged_rows([(str(i + 1), r) for i, r in enumerate(loaded)])
    systems = list(dict.fromkeys(r["system"] for r in rows))
    pools = pools or {}
    check_pools(pools, systems)
    if reference not in systems and reference not in pools:
        raise DataError(f"no system {reference!r} to compare against: one of {', '.join([*systems, *pools])}")
    for name, members in pools.items():
        rows += pooled_rows(rows, name, members, metrics)
    return paired_differences(rows, query_clusters(first["speakers"]), metrics, int(first["seed"]), reference)


def compare_markdown(paths: Sequence[str | Path], differences: list[dict[str, Any]], speakers: Sequence[str] = (),
                     pools: Optional[Mapping[str, Sequence[str]]] = None) -> str:
    """The files (numbered as in system names), the test speakers kept when not all, the pools, and the
    differences table."""
    lines = ["# Paired comparison", "", *[f"- file {i + 1}: {p}" for i, p in enumerate(paths)]]
    if speakers:
        lines.append(f"- only the queries of {len(speakers)} test speakers: {', '.join(speakers)}")
    lines += [f"- pool {name}: the per-query mean of {', '.join(members)} (its CI resamples these runs as well as "
              f"the speakers)" for name, members in (pools or {}).items()]
    lines.append("")
    return "\n".join(lines + differences_markdown(differences))
