"""``compare``: paired differences between the systems of one or more ``evaluate`` results files, against
a reference system of your choice.

``evaluate`` pairs every system against its first checkpoint. Here any system is the reference, and
systems of different evaluations can be paired as long as they scored the same test speakers on the same
support and query utterances (the ``speakers`` record of ``results.json``, and the same shots x steps
cells): e.g. a baseline trained again with another seed, against the meta-learners of an earlier run. The
differences are ``grid.paired_differences``'s (speaker-clustered bootstrap, the first file's seed), so on a
single file with its first system as the reference they are the numbers ``evaluate`` wrote.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

from lightning_tts.errors import DataError
from lightning_tts.evaluation.grid import paired_differences, query_clusters
from lightning_tts.evaluation.report import differences_markdown


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


def merged_rows(files: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The grid rows (reference rows left out) of every (label, results) pair; a system name found in
    more than one file becomes ``<name>@<label>`` in every file that has it."""
    count: dict[str, int] = {}
    for _, results in files:
        for name in dict.fromkeys(r["system"] for r in results["rows"] if r["shots"] is not None):
            count[name] = count.get(name, 0) + 1
    return [{**r, "system": r["system"] if count[r["system"]] == 1 else f"{r['system']}@{label}"}
            for label, results in files for r in results["rows"] if r["shots"] is not None]


def compare_results(paths: Sequence[str | Path], reference: str,
                    metrics: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    """Every system of ``paths`` against ``reference``, per (K, steps) cell and metric (``metrics``:
    default, those every file scored). File i's systems are ``<name>@<i>`` (1-based) when a name is in
    more than one file.

    Raises:
        DataError: no file, files of different speakers or queries, an unknown reference or metric.
    """
    if not paths:
        raise DataError("compare needs at least one results file")
    loaded = [read_results(p) for p in paths]
    first = loaded[0]
    for path, results in zip(paths[1:], loaded[1:]):
        if list(results["speakers"].items()) != list(first["speakers"].items()):  # order too: it is the queries' order
            raise DataError(f"{path}: other test speakers or queries than {paths[0]}: only evaluations of the "
                            f"same support and query utterances can be paired")
    common = [m for m in first["metrics"] if all(m in r["metrics"] for r in loaded)]
    metrics = list(metrics) if metrics else common
    unknown = [m for m in metrics if m not in common]
    if unknown:
        raise DataError(f"metric {unknown[0]!r} is not scored in every file (they share: {', '.join(common)})")
    rows = merged_rows([(str(i + 1), r) for i, r in enumerate(loaded)])
    systems = list(dict.fromkeys(r["system"] for r in rows))
    if reference not in systems:
        raise DataError(f"no system {reference!r} to compare against: one of {', '.join(systems)}")
    return paired_differences(rows, query_clusters(first["speakers"]), metrics, int(first["seed"]), reference)


def compare_markdown(paths: Sequence[str | Path], differences: list[dict[str, Any]]) -> str:
    """The files (numbered as in system names) and the differences table."""
    lines = ["# Paired comparison", "", *[f"- file {i + 1}: {p}" for i, p in enumerate(paths)], ""]
    return "\n".join(lines + differences_markdown(differences))
