"""``compare``: paired differences against any system, across evaluations of the same test queries
(hand-made results files: 2 speakers x 2 queries)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_tts.cli import main
from lightning_tts.errors import DataError
from lightning_tts.evaluation.compare import compare_results
from lightning_tts.evaluation.grid import paired_differences, query_clusters
from lightning_tts.evaluation.stats import mean_ci

SPEAKERS = {"a": {"support": ["a0"], "query": ["a1", "a2"]}, "b": {"support": ["b0"], "query": ["b1", "b2"]}}


def _row(system: str, mcd: list[float], sim: list[float], shots=5, steps=5) -> dict:
    return {"system": system, "shots": shots, "steps": steps,
            "metrics": {"mcd": mean_ci(mcd), "speaker_sim": mean_ci(sim)}}


def _results(tmp: Path, name: str, rows: list[dict], speakers: dict = SPEAKERS) -> Path:
    queries = sum(len(chosen["query"]) for chosen in speakers.values())
    ground_truth = {"system": "ground truth", "shots": None, "steps": None,
                    "metrics": {"mcd": mean_ci([0.0] * queries), "speaker_sim": mean_ci([1.0] * queries)}}
    path = tmp / f"{name}.json"
    path.write_text(json.dumps({"seed": 3, "speakers": speakers, "metrics": ["mcd", "speaker_sim"],
                                "rows": [ground_truth, *rows]}))
    return path


def test_systems_of_two_evaluations_are_paired_against_a_chosen_reference(tmp_path: Path) -> None:
    first = _results(tmp_path, "first", [_row("base", [5, 5, 6, 6], [.7, .7, .6, .6]), _row("maml", [4, 5, 5, 6], [.8, .7, .7, .6])])
    second = _results(tmp_path, "second", [_row("base", [5, 6, 6, 7], [.7, .6, .6, .5])])
    entries = compare_results([first, second], "base@2")
    assert {(e["system"], e["metric"]) for e in entries} == {(s, m) for s in ("base@1", "maml") for m in ("mcd", "speaker_sim")}
    maml_mcd = next(e for e in entries if e["system"] == "maml" and e["metric"] == "mcd")
    # per-query maml - second base: -1, -1, -1, -1 -> mean -1 with no spread across speakers
    assert maml_mcd["against"] == "base@2" and maml_mcd["mean"] == pytest.approx(-1.0)
    assert (maml_mcd["ci_low"], maml_mcd["ci_high"]) == pytest.approx((-1.0, -1.0)) and maml_mcd["clusters"] == 2
    base_sim = next(e for e in entries if e["system"] == "base@1" and e["metric"] == "speaker_sim")
    # per speaker: a (0 + .1) / 2 = .05, b (0 + .1) / 2 = .05
    assert base_sim["mean"] == pytest.approx(0.05) and base_sim["ci_low"] == pytest.approx(0.05)
    assert [e["metric"] for e in compare_results([first, second], "base@2", ["speaker_sim"])] == ["speaker_sim"] * 2


def test_one_file_against_its_first_system_gives_evaluates_own_differences(tmp_path: Path) -> None:
    rows = [_row("base", [5, 5, 6, 6], [.7, .7, .6, .6]), _row("maml", [4, 5, 5, 7], [.8, .7, .5, .6]),
            _row("mann", [6, 5, 4, 6], [.7, .8, .6, .7])]
    path = _results(tmp_path, "one", rows)
    assert compare_results([path], "base") == paired_differences(rows, query_clusters(SPEAKERS), ["mcd", "speaker_sim"], 3)
    against_maml = compare_results([path], "maml")
    assert {e["system"] for e in against_maml} == {"base", "mann"} and {e["against"] for e in against_maml} == {"maml"}


def test_systems_pooled_by_query_are_compared_as_one(tmp_path: Path, capsys) -> None:
    path = _results(tmp_path, "runs", [_row("base", [5, 5, 6, 6], [.7, .7, .6, .6]), _row("run1", [4, 5, 5, 6], [.8, .7, .7, .6]),
                                       _row("run2", [4, 3, 5, 4], [.8, .9, .5, .6])])
    entries = compare_results([path], "base", ["mcd"], pools={"recipe": ["run1", "run2"]})
    pooled = next(e for e in entries if e["system"] == "recipe")
    # per-query means 4, 4, 5, 5 -> minus base: -1 on every query; but the runs differ: run1 - base is
    # -1, 0, -1, 0 (mean -0.5), run2 - base -1, -2, -1, -2 (mean -1.5), alike in both speakers, so the
    # CI is the spread of the run draws {1, 1}, {1, 2}, {2, 2}: -0.5, -1.0, -1.5
    assert pooled["mean"] == pytest.approx(-1.0) and (pooled["ci_low"], pooled["ci_high"]) == pytest.approx((-1.5, -0.5))
    assert pooled["runs"] == [1, 2] and {e["system"] for e in entries} == {"run1", "run2", "recipe"}
    # a pool is a reference too: base against the two runs' mean is +1, and run1 against it +0.5 on average
    against_pool = compare_results([path], "recipe", ["mcd"], pools={"recipe": ["run1", "run2"]})
    base = next(e for e in against_pool if e["system"] == "base")
    assert base["mean"] == pytest.approx(1.0) and (base["ci_low"], base["ci_high"]) == pytest.approx((0.5, 1.5))
    assert next(e for e in against_pool if e["system"] == "run1")["mean"] == pytest.approx(0.5)
    for pool in (["run1"], ["run1", "run1"], ["run1", "run2", "run1"], ["run1", "run3"]):
        with pytest.raises(DataError, match="--pool p: needs two or more different systems of base, run1, run2"):
            compare_results([path], "base", pools={"p": pool})
    with pytest.raises(DataError, match="--pool run1: a system of the files is already called 'run1'"):
        compare_results([path], "base", pools={"run1": ["run1", "run2"]})
    # the command: an unnamed pool is called mean(...), a named one is the reference; names are unique
    assert main(["compare", str(path), "--reference", "both", "--metrics", "mcd", "--pool", "both=run1,run2",
                 "--pool", "base,run1"]) == 0
    printed = capsys.readouterr().out
    assert "- pool both: the per-query mean of run1, run2 (its CI resamples these runs as well as the speakers)" in printed
    assert "| mean(base, run1) | 5 | 5 | mcd | +0.750 |" in printed  # (4.5, 5, 5.5, 6) - (4, 4, 5, 5)
    assert main(["compare", str(path), "--reference", "base", "--pool", "p=run1,run2", "--pool", "p=base,run1"]) == 1
    assert "--pool p: named twice" in capsys.readouterr().err


def test_a_subset_of_speakers_pairs_only_their_queries(tmp_path: Path, capsys) -> None:
    three = {**SPEAKERS, "c": {"support": ["c0"], "query": ["c1", "c2"]}}
    big = _results(tmp_path, "big", [_row("base", [5, 5, 6, 6, 7, 7], [.7] * 6), _row("maml", [4, 5, 5, 6, 7, 9], [.7] * 6)],
                   speakers=three)
    entries = compare_results([big], "base", ["mcd"], speakers=["c", "a"])
    # a: 4-5, 5-5 -> -1, 0; c: 7-7, 9-7 -> 0, +2; b (-1, 0) left out -> mean (-1 + 0 + 0 + 2) / 4
    assert len(entries) == 1 and entries[0]["mean"] == pytest.approx(0.25)
    assert entries[0]["n"] == 4 and entries[0]["clusters"] == 2
    # a 3-speaker and a 2-speaker evaluation pair on the speakers both evaluated, not without naming them
    small = _results(tmp_path, "small", [_row("base", [6, 6, 5, 5], [.7] * 4)],
                     speakers={"b": SPEAKERS["b"], "a": SPEAKERS["a"]})  # another speaker order
    with pytest.raises(DataError, match=f"{small}: other test speakers than {big}: pair them on the speakers"):
        compare_results([big, small], "base@2", ["mcd"])
    both = compare_results([big, small], "base@2", ["mcd"], speakers=["a", "b"])
    maml = next(e for e in both if e["system"] == "maml")
    # maml a: 4, 5 and b: 5, 6 against small's base a: 5, 5 and b: 6, 6 -> -1, 0, -1, 0
    assert maml["mean"] == pytest.approx(-0.5) and maml["n"] == 4
    with pytest.raises(DataError, match=f"{small}: no test speaker 'c' \\(it evaluated b, a\\)"):
        compare_results([big, small], "base@2", speakers=["a", "c"])
    with pytest.raises(DataError, match="--speakers names a speaker twice: a, a"):
        compare_results([big], "base", speakers=["a", "a"])
    assert main(["compare", str(big), "--reference", "base", "--metrics", "mcd", "--speakers", "c,a"]) == 0
    printed = capsys.readouterr().out
    assert "- only the queries of 2 test speakers: c, a" in printed and "| maml | 5 | 5 | mcd | +0.250 |" in printed


def test_compare_command_prints_and_writes_the_table(tmp_path: Path, capsys) -> None:
    first = _results(tmp_path, "first", [_row("base", [5, 5, 6, 6], [.7, .7, .6, .6]), _row("maml", [4, 5, 5, 6], [.8, .7, .7, .6])])
    out = tmp_path / "cmp.md"
    assert main(["compare", str(first), "--reference", "maml", "--metrics", "mcd", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| base | 5 | 5 | mcd | +0.500 | [+0.500, +0.500] |" in printed and "speaker_sim" not in printed
    assert f"- file 1: {first}" in out.read_text() and f"wrote {out}" in printed


def test_bad_comparisons_fail_in_one_line(tmp_path: Path, capsys) -> None:
    first = _results(tmp_path, "first", [_row("base", [5, 5, 6, 6], [.7, .7, .6, .6])])
    other = _results(tmp_path, "other", [_row("base", [5, 5, 6, 6], [.7, .7, .6, .6])],
                     speakers={**SPEAKERS, "b": {"support": ["b0"], "query": ["b2", "b1"]}})
    with pytest.raises(DataError, match=f"{other}: other test speakers or queries than {first}"):
        compare_results([first, other], "base@1")
    with pytest.raises(DataError, match="no system 'base' to compare against: one of base@1, base@2"):
        compare_results([first, first], "base")
    with pytest.raises(DataError, match="metric 'wer' is not scored in every file"):
        compare_results([first], "base", ["wer"])
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "other.json").write_text("{}")
    cases = [([str(tmp_path / "missing.json")], "no such results file"),
             ([str(tmp_path / "broken.json")], "not a JSON results file"),
             ([str(tmp_path / "other.json")], "not an evaluate results file (no 'rows')"),
             ([str(first), "--out", "/nonexistent/dir/x.md"], "directory /nonexistent/dir does not exist")]
    for argv, message in cases:
        assert main(["compare", *argv, "--reference", "base"]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
