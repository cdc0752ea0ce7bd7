"""``experiment``: the whole comparison in one command, resumable after a kill between stages.

Tiny sizes on a 10-speaker procedural corpus: a 3-step baseline and a MAML run warm-started from it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from lightning_tts.atomic import file_sha256
from lightning_tts.cli import main
from lightning_tts.errors import ConfigError
from lightning_tts.config import load_config
from lightning_tts.evaluation.grid import check_metrics
from lightning_tts.evaluation.scoring import METRICS
from lightning_tts.experiment import (DEFAULT_EXPERIMENT, NOT_TRAINING, changed_entries, choose_rate, chosen_rates,
                                      headroom_markdown, load_experiment, settings_sha256)

ROOT = Path(__file__).resolve().parents[1]


def tiny_experiment(tmp: Path, corpus: Path, maml_steps: int = 2) -> Path:
    """An experiment file: baseline (3 steps) then MAML warm-started from it; tiny grids."""
    spec = {
        "out": str(tmp / "out"),
        "overrides": [f"data.root={corpus}", f"data.cache_dir={tmp / 'cache'}", "data.splits.val=2",
                      "data.splits.test=2", "data.preprocess_workers=1", "fewshot.every=0", "trainer.limit_val_batches=1",
                      "trainer.check_val_every_n_epoch=null", "data.tasks.queries=2", "data.tasks.shots=2",
                      "trainer.enable_progress_bar=false"],
        "systems": {
            "baseline": {"config": ["conf/learner/multispeaker.yaml"],
                         "overrides": ["trainer.max_steps=3", "data.batch_size=4", "trainer.val_check_interval=3"]},
            "maml": {"config": ["conf/learner/maml.yaml"], "init_from": "baseline",
                     "overrides": [f"trainer.max_steps={maml_steps}", "learner.inner_steps=1", "data.tasks.tasks_per_batch=2",
                                   "trainer.val_check_interval=1000"]},
        },
        "tune": {"lrs": [0.01], "shots": 2, "steps": [1]},
        "evaluate": {"shots": [2], "steps": [0, 1], "samples": 1},
    }
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_overrides_go_to_the_experiment_or_to_every_run() -> None:
    experiment = load_experiment([], ["out=/x/y", "tune.lrs=[0.1]", "data.root=/corpus", "trainer.max_steps=7"])
    assert experiment.out == "/x/y" and experiment.tune.lrs == [0.1]
    assert experiment.overrides[-2:] == ["data.root=/corpus", "trainer.max_steps=7"]
    assert list(experiment.systems)[0] == "baseline"  # the default file; the reference of the differences
    assert load_experiment([DEFAULT_EXPERIMENT]).systems.keys() == experiment.systems.keys()


@pytest.mark.parametrize("overrides, message", [
    (["systems.metric.init_from=maml_memory"], "systems.metric.init_from='maml_memory' is not a system listed before 'metric'"),
    (["tune.metric=loudness"], "tune.metric must be one of"),
    (["tune.lrs=[0.0]"], "tune needs rates > 0"),
    (["tune.steps=[]"], "tune needs rates > 0, shots >= 1 and steps >= 1"),
    (["tune.steps=[0,5]"], "tune needs rates > 0, shots >= 1 and steps >= 1"),
    (["evaluate.shots=[0]"], "evaluate needs shots >= 1"),
    (["evaluate.name=runs"], "evaluate.name must be a plain name"),
    (["evaluate.name=../x"], "evaluate.name must be a plain name"),
    (["also_evaluate=[{name: evaluate}]"], "also_evaluate[0].name='evaluate' is taken by an earlier evaluation"),
    (["also_evaluate=[{name: more},{name: stages}]"], "also_evaluate[1].name must be a plain name"),
    (["also_evaluate=[{name: more, steps: []}]"], "also_evaluate[0] needs shots >= 1, steps >= 0"),
    (["also_evaluate.0.name=more"], "also_evaluate in the command-line overrides: its value does not have the shape"),
    (["also_evaluate=[{name: more, metrics: [mcd, loudness]}]"], "also_evaluate[0].metrics: unknown metric 'loudness': one of mcd,"),
    (["evaluate.metrics=[]"], "evaluate.metrics must include one of speaker_sim, wer, mcd, f0_rmse (the report's tables"),
    (["evaluate.metrics=[pesq,stoi]"], "evaluate.metrics must include one of speaker_sim"),
    (["systems.baseline.confg=[a.yaml]"], "unknown config key 'systems.baseline.confg'"),
    (["device=toaster"], "device must be auto, cpu, cuda or cuda:N, got 'toaster'"),
])
def test_bad_experiments_fail_in_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_experiment([], overrides)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_where_there_is_none_fails_at_load() -> None:
    with pytest.raises(ConfigError, match="^device cuda: no CUDA device is available here"):
        load_experiment([], ["device=cuda"])


def test_no_systems_and_bad_run_keys_fail_before_training(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text(f"out: {tmp_path / 'out'}\n")
    assert main(["experiment", "--config", str(empty)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: experiment: no systems")
    assert main(["experiment", f"out={tmp_path / 'out'}", "trainer.max_stepz=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown config key 'trainer.max_stepz'") and "\n" not in err
    assert not (tmp_path / "out" / "runs").exists()
    assert main(["experiment", f"out={tmp_path / 'out'}", "evaluate.overrides=[fewshot.workers=-2]"]) == 2
    assert capsys.readouterr().err.strip() == "error: fewshot.workers must be >= 0 (0: one per CPU core), got -2"
    assert main(["experiment", f"out={tmp_path / 'out'}", "also_evaluate=[{name: more, overrides: [fewshot.workers=-1]}]"]) == 2
    assert capsys.readouterr().err.strip() == "error: fewshot.workers must be >= 0 (0: one per CPU core), got -1"
    assert main(["experiment", f"out={tmp_path / 'out'}", "also_evaluate=[{name: more, metrics: [mcd, wer]}]"]) == 2
    assert capsys.readouterr().err.strip() == ("error: also_evaluate[0].metrics: metrics wer and cer need the recogniser, "
                                               "but fewshot.wer=false")  # the default preset turns the recogniser off
    assert not (tmp_path / "out" / "runs").exists()


def test_the_rate_is_chosen_by_the_metrics_direction() -> None:
    assert choose_rate({"own": 5.0, "0.01": 4.0, "0.03": float("nan")}, "mcd") == "0.01"
    assert choose_rate({"own": 0.7, "0.01": 0.6}, "speaker_sim") == "own"
    assert choose_rate({"own": float("nan")}, "mcd") == "own"


def test_each_evaluated_step_count_takes_the_rate_tuned_at_or_below_it() -> None:
    choice = {"chosen": {"base": {"5": "0.01", "20": "own"}, "maml": {"5": "own"}}}
    assert chosen_rates(choice, [0, 5, 10, 20, 40]) == {
        "base": {0: 0.01, 5: 0.01, 10: 0.01, 20: None, 40: None},  # 0 steps: below every tuned count -> the smallest's
        "maml": {0: None, 5: None, 10: None, 20: None, 40: None}}


def test_changed_entries_keeps_what_differs_from_the_defaults() -> None:
    tree = {"a": 1, "b": {"c": 2, "d": [1, 2]}, "e": None, "f": {"g": 0}}
    defaults = {"a": 1, "b": {"c": 3, "d": [1, 2]}, "f": {"g": 0}}
    assert changed_entries(tree, defaults) == {"b": {"c": 2}, "e": None}


def test_a_systems_fingerprint_ignores_options_at_their_defaults() -> None:
    """Settings fingerprint: an option written out at its default (as a newly added option with the old
    behaviour is) changes nothing; another value, another learner or a training setting changes it;
    ``NOT_TRAINING`` sections never do."""
    def fingerprint(*overrides: str) -> str:
        return settings_sha256(load_config(["conf/learner/maml.yaml"], list(overrides)), NOT_TRAINING)

    plain = fingerprint("learner.speaker_start=encoder")
    assert fingerprint("learner.speaker_start=encoder", "learner.speaker_consistency=0.0") == plain
    assert fingerprint("learner.speaker_start=encoder", "fewshot.wer=false", "fewshot.every=7") == plain
    assert fingerprint("learner.speaker_start=encoder", "learner.speaker_consistency=0.5") != plain
    assert fingerprint("learner.speaker_start=encoder", "trainer.max_steps=7") != plain
    assert fingerprint() != plain
    # two learners at their defaults differ (the learner's name is always kept)
    assert settings_sha256(load_config([], ["learner.name=mann"])) != settings_sha256(load_config([], ["learner.name=metric"]))


def _experiment(spec: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lightning_tts", "experiment", "--config", str(spec), "--no-progress",
                             *overrides], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_experiment_resumes_after_a_kill_between_stages(synthetic_root: Path, tmp_path: Path) -> None:
    spec = tiny_experiment(tmp_path, synthetic_root, maml_steps=1000)
    out = tmp_path / "out"
    first = _experiment(spec)
    deadline = time.time() + 240
    while not (out / "stages" / "train-baseline.json").is_file():
        assert first.poll() is None and time.time() < deadline, first.communicate()[0][-3000:]
        time.sleep(0.2)
    first.send_signal(signal.SIGTERM)  # the baseline stage is done; MAML is starting or training
    log = first.communicate(timeout=120)[0]
    assert first.returncode != 0, log[-3000:]
    baseline = json.loads((out / "stages" / "train-baseline.json").read_text())
    checkpoint = Path(baseline["checkpoint"])
    stamp = checkpoint.stat().st_mtime_ns
    assert not (out / "stages" / "train-maml.json").exists() and not (out / "report.md").exists()

    # the same command again (MAML's budget cut so the test is short): the baseline is not retrained
    maml_budget = ["systems.maml.overrides=[trainer.max_steps=2,learner.inner_steps=1,data.tasks.tasks_per_batch=2,"
            "trainer.val_check_interval=1000]"]
    again = _experiment(spec, *maml_budget)
    log = again.communicate(timeout=600)[0]
    assert again.returncode == 0, log[-3000:]
    assert "[1/5] train baseline: done before, skipped" in log and "train baseline: training" not in log
    assert checkpoint.stat().st_mtime_ns == stamp and file_sha256(checkpoint) == baseline["sha256"]
    assert f"report: {out / 'report.md'}" in log
    stages = sorted(p.stem for p in (out / "stages").glob("*.json"))
    assert stages == ["evaluate", "train-baseline", "train-maml", "tune-lr-0.01", "tune-lr-own"]

    # what the report holds: rates chosen on validation speakers and used on the test speakers
    choice = json.loads((out / "tune" / "choice.json").read_text())
    results = json.loads((out / "evaluate" / "results.json").read_text())
    assert choice["split"] == "val" and set(choice["chosen"]) == {"baseline", "maml"}
    # the baseline's own rate is the grid's 0.01: not adapted again there, its 'own' scores copied
    grid_stage = json.loads((out / "stages" / "tune-lr-0.01.json").read_text())
    assert grid_stage["copied_from_own"] == ["baseline"] and "(the own rate of baseline: scores copied)" in log
    assert choice["scores"]["baseline"]["1"]["0.01"] == choice["scores"]["baseline"]["1"]["own"]
    assert [c["system"] for c in json.loads((out / "tune" / "lr-0.01" / "results.json").read_text())["checkpoints"]] == ["maml"]
    tuned = json.loads((out / "tune" / "lr-own" / "results.json").read_text())
    assert not set(tuned["speakers"]) & set(results["speakers"])
    assert tuned["metrics"] == ["mcd"] and tuned["speaker_encoder"] is None  # tuning scores its criterion only
    assert {r["system"] for r in tuned["rows"]} == {"baseline", "maml"}  # and no ground-truth / ceiling rows
    assert "speaker_sim" in results["metrics"]
    where = "cuda" if torch.cuda.is_available() else "cpu"  # device=auto: tuning and evaluation say where they ran
    assert results["device"] == tuned["device"] == where
    assert json.loads((out / "stages" / "evaluate.json").read_text())["device"] == grid_stage["device"] == where
    for entry in results["checkpoints"]:  # tuned at 1 step: every evaluated step count (0, 1) takes that rate
        chosen = choice["chosen"][entry["system"]]["1"]
        assert entry["adapt_lr"] == {n: None if chosen == "own" else float(chosen) for n in ("0", "1")}
    maml = next(c for c in results["checkpoints"] if c["system"] == "maml")
    assert maml["training_cost"]["prior_steps"] == 3  # the baseline's steps, counted in MAML's cost
    assert {d["system"] for d in results["differences"]} == {"maml"}
    report = (out / "report.md").read_text()
    assert "| maml | maml | baseline |" in report and "## Choosing the adaptation rate" in report

    # a third run redoes nothing
    third = _experiment(spec, *maml_budget)
    log = third.communicate(timeout=300)[0]
    assert third.returncode == 0 and log.count("done before, skipped") == 5, log[-3000:]

    # a change that touches no system's weights (here: no recogniser) redoes the evaluation only
    rescored = _experiment(spec, *maml_budget, "fewshot.wer=false")
    log = rescored.communicate(timeout=300)[0]
    assert rescored.returncode == 0 and log.count("done before, skipped") == 4, log[-3000:]
    assert "evaluate on the test speakers: K=[2]" in log and "wer" not in json.loads(
        (out / "evaluate" / "results.json").read_text())["metrics"], log[-3000:]

    # a further evaluation of the same systems (here: one query per speaker, two metrics) runs after the first, beside it
    evaluate_stamp = (out / "evaluate" / "results.json").stat().st_mtime_ns
    more = _experiment(spec, *maml_budget, "fewshot.wer=false", "also_evaluate=[{name: more, shots: [2], steps: [1], "
                       "samples: 0, overrides: [data.tasks.queries=1], metrics: [mcd, speaker_sim]}]")
    log = more.communicate(timeout=300)[0]
    assert more.returncode == 0 and log.count("done before, skipped") == 5, log[-3000:]
    assert "[6/6] evaluate on the test speakers (more): K=[2], steps=[1]" in log, log[-3000:]
    assert f"report: {out / 'report.md'}" in log and f"report of more: {out / 'report-more.md'}" in log
    assert (out / "evaluate" / "results.json").stat().st_mtime_ns == evaluate_stamp
    extra = json.loads((out / "more" / "results.json").read_text())
    assert extra["speakers"].keys() == results["speakers"].keys()
    assert all(len(sets["query"]) == 1 for sets in extra["speakers"].values())
    assert extra["metrics"] == ["mcd", "speaker_sim"] and "pesq" not in extra["rows"][0]["metrics"]
    assert json.loads((out / "stages" / "more.json").read_text())["metrics"] == ["mcd", "speaker_sim"]
    assert json.loads((out / "stages" / "evaluate.json").read_text())["metrics"] is None  # all of them
    assert "`data.tasks.queries=1`" in (out / "report-more.md").read_text()
    assert "Scored only mcd, speaker_sim (this evaluation's `metrics`)." in (out / "report-more.md").read_text()
    assert (out / "stages" / "more.json").is_file()
    differences = [d for d in extra["differences"] if d["metric"] == "mcd"]  # the main report closes with them
    assert [(d["system"], d["shots"], d["steps"]) for d in differences] == [("maml", 2, 1)]
    report = (out / "report.md").read_text()
    assert "# Also evaluated: more (2 test speakers, K=[2], steps=[1]; the same systems and chosen rates)" in report
    assert "| maml | 2 | 1 | " in report.split("# Also evaluated: more")[1]
    assert "; scored only mcd, speaker_sim." in report.split("# Also evaluated: more")[1]
    assert f"{differences[0]['mean']:+.3f} [{differences[0]['ci_low']:+.3f}, {differences[0]['ci_high']:+.3f}]" in report

    # the selection dropped: the further evaluation is redone with every metric, not served from the selection's record
    every = _experiment(spec, *maml_budget, "fewshot.wer=false", "also_evaluate=[{name: more, shots: [2], steps: [1], "
                        "samples: 0, overrides: [data.tasks.queries=1]}]")
    log = every.communicate(timeout=300)[0]
    assert every.returncode == 0 and "(more): K=[2], steps=[1]" in log, log[-3000:]
    assert "pesq" in json.loads((out / "more" / "results.json").read_text())["metrics"]

    # a system trained under another config is not reused silently: one line naming what to remove, nothing deleted
    changed = _experiment(spec)  # MAML's budget as the file says, not as it was trained
    log = changed.communicate(timeout=300)[0]
    assert changed.returncode != 0 and log.splitlines()[-1] == (
        f"error: systems.maml changed (its run config or its warm start) since it was trained: remove "
        f"{out / 'runs' / 'maml'} and {out / 'stages' / 'train-maml.json'} to retrain it, or set another out="), log[-3000:]
    assert (out / "stages" / "train-maml.json").is_file() and (out / "report.md").is_file()


def test_room_to_win_is_the_reference_against_its_own_most_steps_cell() -> None:
    """Paired by query, clustered by speaker; only the first system; every cell with fewer steps."""
    def row(system: str, steps: int, mcd: list[float]) -> dict:
        return {"system": system, "shots": 5, "steps": steps, "metrics": {"mcd": {"values": mcd}}}

    results = {"metrics": {"mcd": {}}, "speakers": {"s1": {"query": ["a", "b"]}, "s2": {"query": ["c", "d"]}},
               "rows": [{"system": "ground truth", "shots": None, "steps": None, "metrics": {}},
                        row("base", 0, [6.0, 6.0, 7.0, 9.0]), row("base", 5, [5.0, 5.0, 6.0, 6.0]),
                        row("base", 20, [4.0, 4.0, 5.0, 5.0]), row("other", 0, [1.0, 1.0, 1.0, 1.0])]}
    table = headroom_markdown(results).splitlines()
    assert table[0].startswith("## Room to win: base at 20 steps minus base at fewer steps")
    assert table[2] == "| K | steps | mcd |"
    # steps 0: s1 differs by -2 on both queries, s2 by -2 and -4: mean -2.5; resampling speakers gives -2 or -3 at the ends
    assert table[4:] == ["| 5 | 0 | -2.500 [-3.000, -2.000] |", "| 5 | 5 | -1.000 [-1.000, -1.000] |"]


@pytest.mark.parametrize("preset, corpus, name", [("conf/experiment/fewshot_default.yaml", "synthetic", "p{:03d}"),
                                                  ("conf/experiment/fewshot_espeak.yaml", "espeak", "e{:03d}")])
def test_the_24_speaker_evaluation_keeps_the_training_and_validation_speakers(preset: str, corpus: str, name: str) -> None:
    """The presets' ``also_evaluate`` lists are the seed-0 split of their 40-speaker corpus: the same
    validation speakers, its test speakers plus the 20 new ones, so the trained systems meet no test
    speaker and the 32 training speakers are unchanged."""
    from types import SimpleNamespace

    from lightning_tts.data.datamodule import split_speakers

    first = 101 if corpus == "synthetic" else 1
    experiment = load_experiment([preset])
    (more,) = experiment.also_evaluate
    cfgs = [load_config(experiment.config, [*experiment.overrides, *extra]) for extra in ([], more.overrides)]
    splits = []
    for cfg in cfgs:
        count = cfg.data[corpus].speakers
        index = SimpleNamespace(utterances=[SimpleNamespace(speaker=name.format(first + i), utterance_id=f"{i}_{j}")
                                            for i in range(count) for j in range(4)])
        splits.append(split_speakers(index, OmegaConf.to_container(cfg.data.splits)))
    main, wide = splits
    assert (len(main.train), len(main.val), len(main.test)) == (32, 4, 4)
    assert wide.train == main.train and wide.val == main.val and set(main.test) < set(wide.test)
    assert len(wide.test) == 24 and more.name == "evaluate_24" and more.shots == [5]
    # every metric but PESQ, each one this corpus's run config can score
    check_metrics(more.metrics, cfgs[1])
    assert set(METRICS) - set(more.metrics) == {"pesq"} | ({"wer", "cer"} if corpus == "synthetic" else set())


def test_a_further_evaluation_closes_the_report_with_its_paired_differences() -> None:
    """One row per (system, K, steps), one column per summary metric it has ('-' where one is missing);
    a single system has none to show."""
    from lightning_tts.experiment import EvaluateConfig, also_markdown

    def diff(system: str, steps: int, metric: str, mean: float) -> dict:
        return {"system": system, "shots": 5, "steps": steps, "metric": metric, "mean": mean, "ci_low": mean - 0.1,
                "ci_high": mean + 0.1, "against": "base"}

    grid = EvaluateConfig(shots=[5], steps=[0, 5], name="wide", overrides=["data.root=x"])
    results = {"speakers": {"s1": {}, "s2": {}, "s3": {}},
               "differences": [diff("a", 0, "mcd", -0.5), diff("a", 0, "speaker_sim", 0.02), diff("a", 5, "mcd", 0.25),
                               diff("a", 5, "pesq", 1.0)]}
    lines = also_markdown(grid, results).splitlines()
    assert lines[0] == "# Also evaluated: wide (3 test speakers, K=[5], steps=[0, 5]; the same systems and chosen rates)"
    assert lines[2] == "Its report: report-wide.md; listening page: wide/report.html; run-config overrides `data.root=x`."
    assert lines[4] == "Paired differences against base (speaker-clustered bootstrap 95 % CI):"
    assert lines[6:] == ["| system | K | steps | speaker_sim | mcd |", "|---|---|---|---|---|",
                         "| a | 5 | 0 | +0.020 [-0.080, +0.120] | -0.500 [-0.600, -0.400] |",
                         "| a | 5 | 5 | - | +0.250 [+0.150, +0.350] |"]
    assert also_markdown(grid, {"speakers": {"s1": {}}, "differences": []}).splitlines()[4] == \
        "One system: no paired differences."
