"""One command for the whole few-shot comparison: train every system, choose each one's adaptation
rate on the validation speakers, evaluate them all on the test speakers, write one report.

An experiment file (``conf/experiment/<name>.yaml``, schema ``ExperimentConfig``) names the systems
in order; each is one ``fit`` (its run-config files and overrides over the experiment's own) and may
warm-start from an earlier system (``init_from: baseline``: that system's ``last.ckpt``). The stages:

1. ``train <system>`` for each system, into ``<out>/runs/<system>``;
2. ``tune lr=<rate>`` for each candidate rate (``tune.lrs``, plus the learner's own rate): every
   checkpoint adapts to the *validation* speakers (``evaluate --split val``) at ``tune.shots`` and each
   of ``tune.steps``; each system keeps, per step count, the rate with the best ``tune.metric``
   (``<out>/tune/choice.json``; only that metric is scored, only the systems' rows; a system whose own
   rate is a grid rate is not adapted again at it: its scores there are the ``own`` stage's);
3. ``evaluate``: the test speakers, every system with its chosen rate, into ``<out>/evaluate``
   (``results.json``/``.md``, paired differences against the first system, ``report.html``);
   ``evaluate.name`` and ``evaluate.overrides`` give it another folder and run-config overrides of its
   own (e.g. more test speakers), leaving training and tuning as they are;
4. each of ``also_evaluate`` (none by default): a further evaluation of the same trained systems with
   the same chosen rates, after ``evaluate``, into ``<out>/<its name>`` with ``<out>/report-<its name>.md``;
5. ``<out>/report.md`` (``report-<name>.md``): systems, training costs, the tuning table, a summary, the room to win
   (``headroom_markdown``), the evaluation tables, and the paired differences of each ``also_evaluate``
   evaluation (``also_markdown``); rewritten as each further evaluation finishes.

Each stage is skipped when its finished output exists (``<out>/stages/<stage>.json``, written last,
atomically); a killed ``train`` stage resumes from its own ``last.ckpt``. So after a kill the same
command picks up where it stopped (a killed system resumes under the current config, as ``fit
ckpt_path=last`` does). A finished system whose settings (what its run config sets away from its
learner's defaults, less ``NOT_TRAINING``) or warm-start source changed since it was trained is not
reused silently: the command stops and names what to remove; an option added later at a default that
keeps the old behaviour does not count as a change. Tuning and evaluation are redone when their
checkpoints, settings or run config changed.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from omegaconf import OmegaConf

from lightning_tts.atomic import file_sha256, read_json, write_json, write_text
from lightning_tts.config import load_config, merge_checked, read_sources
from lightning_tts.devices import resolve_device
from lightning_tts.errors import ConfigError, DataError
from lightning_tts.evaluation.grid import check_metric_names, check_metrics, run_evaluation
from lightning_tts.evaluation.parallel import grid_workers
from lightning_tts.evaluation.report import results_markdown
from lightning_tts.evaluation.scoring import LOWER_IS_BETTER
from lightning_tts.evaluation.stats import format_cost, format_mean_ci, paired_bootstrap
from lightning_tts.learners import load_learner
from lightning_tts.training import run

log = logging.getLogger("lightning_tts")
#: Run-config sections that change what is logged, vocoded or scored, never a system's weights: a
#: change there does not make a trained system stale (it does redo tuning and evaluation).
NOT_TRAINING = ("fewshot", "vocoder", "projection")
#: Folders of an experiment that an evaluation (``evaluate.name``) must not take.
RESERVED_FOLDERS = ("runs", "stages", "tune")


def config_sha256(cfg: Any, leave_out: Sequence[str] = ()) -> str:
    """SHA-256 of a resolved run config as YAML, without the top-level sections ``leave_out``."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    return yaml_sha256({k: v for k, v in tree.items() if k not in leave_out})


def yaml_sha256(tree: dict[str, Any]) -> str:
    """SHA-256 of a config tree written as YAML."""
    return hashlib.sha256(OmegaConf.to_yaml(tree).encode()).hexdigest()


def settings_sha256(cfg: Any, leave_out: Sequence[str] = ()) -> str:
    """SHA-256 of what a run config sets away from the defaults of its learner (``learner.name``
    always kept), without the top-level sections ``leave_out``: an option added later with a default
    that keeps the old behaviour leaves it unchanged, a changed value changes it."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    defaults = OmegaConf.to_container(load_config([], [f"learner.name={cfg.learner.name}"]), resolve=True)
    settings = {k: v for k, v in changed_entries(tree, defaults).items() if k not in leave_out}
    settings.setdefault("learner", {})["name"] = cfg.learner.name
    return yaml_sha256(settings)


def changed_entries(tree: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``tree`` (nested dicts) that ``defaults`` lacks or holds another value for."""
    changed: dict[str, Any] = {}
    for key, value in tree.items():
        default = defaults.get(key, changed)  # ``changed`` as a marker no value equals
        if isinstance(value, dict) and isinstance(default, dict):
            inner = changed_entries(value, default)
            if inner:
                changed[key] = inner
        elif value != default:
            changed[key] = value
    return changed

#: The experiment file used when ``experiment`` is given none.
DEFAULT_EXPERIMENT = "conf/experiment/fewshot_default.yaml"


@dataclass
class SystemConfig:
    """One system of the comparison: one ``fit``.

    Attributes:
        config: run-config files (merged after the experiment's ``config``), e.g. a learner preset.
        overrides: ``key=value`` run-config overrides (after the experiment's ``overrides``).
        init_from: the name of an earlier system to warm-start from (its ``last.ckpt``).
    """

    config: List[str] = field(default_factory=list)
    overrides: List[str] = field(default_factory=list)
    init_from: Optional[str] = None


@dataclass
class TuneConfig:
    """Choosing each system's adaptation learning rate on the validation speakers.

    Attributes:
        lrs: candidate rates; the learner's own rate (MAML: its learned rates) is always a candidate.
        shots: support utterances while tuning.
        steps: adaptation step counts while tuning; a rate is chosen for each, and an evaluated step
            count adapts with the rate chosen at the largest tuned count not above it (the smallest
            tuned count's rate below them all).
        metric: the criterion (a metric of ``evaluate``; its direction from ``LOWER_IS_BETTER``).
    """

    lrs: List[float] = field(default_factory=lambda: [0.003, 0.01, 0.03])
    shots: int = 5
    steps: List[int] = field(default_factory=lambda: [5, 20])
    metric: str = "mcd"


@dataclass
class EvaluateConfig:
    """The test-speaker grid (as ``evaluate --shots --steps --samples``).

    Attributes:
        shots, steps, samples: as ``evaluate --shots --steps --samples``.
        name: the stage and its folder ``<out>/<name>``; its report is ``<out>/report.md`` for the
            default name, ``<out>/report-<name>.md`` for another, so a second evaluation of the same
            trained systems (more or other test speakers) sits beside the first.
        overrides: run-config overrides of this stage only (training and tuning never see them), e.g.
            a larger corpus with more test speakers: ``data.root=...``, ``data.splits.test_speakers=[...]``.
            Whatever they say, a speaker that a system trained on is refused as a test speaker.
        metrics: score only these (``evaluation.scoring.METRICS``, as ``evaluate --metrics``; at least one
            of ``SUMMARY_METRICS``); None: every metric the run config allows. Leaving out one that no
            summary table shows (``pesq``) shortens a large evaluation.
    """

    shots: List[int] = field(default_factory=lambda: [1, 5])
    steps: List[int] = field(default_factory=lambda: [0, 5, 20])
    samples: int = 2
    name: str = "evaluate"
    overrides: List[str] = field(default_factory=list)
    metrics: Optional[List[str]] = None


@dataclass
class ExperimentConfig:
    """A whole comparison (see the module docstring).

    Attributes:
        out: the experiment folder.
        config: run-config files every system starts from (over ``conf/default.yaml``).
        overrides: run-config overrides every system gets (the command line's run-config overrides
            are appended here).
        systems: name -> ``SystemConfig``, trained in this order; the first is the reference of the
            paired differences.
        tune: see ``TuneConfig``.
        evaluate: see ``EvaluateConfig``.
        also_evaluate: further evaluations of the same trained systems with the same chosen rates, run
            after ``evaluate`` in this order, each a stage with its own (distinct) name, folder and
            report (e.g. more test speakers than ``evaluate`` has: ``conf/experiment/fewshot_default.yaml``).
        device: where tuning and evaluation adapt and synthesise (as ``evaluate --device``): ``auto``
            (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; scoring runs on the CPU.
            Training runs where the run config's ``trainer.accelerator`` says (``auto`` by default).
            Not part of what a finished stage must match (the CPU and CUDA agree to the last digits:
            README "Performance"); each stage's record and ``results.json`` say where it ran.
    """

    out: str = "artifacts/experiment"
    config: List[str] = field(default_factory=list)
    overrides: List[str] = field(default_factory=list)
    systems: Dict[str, SystemConfig] = field(default_factory=dict)
    tune: TuneConfig = field(default_factory=TuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    also_evaluate: List[EvaluateConfig] = field(default_factory=list)
    device: str = "auto"

    def evaluations(self) -> list[EvaluateConfig]:
        """``evaluate`` then each of ``also_evaluate``: every test-speaker evaluation, in stage order."""
        return [self.evaluate, *self.also_evaluate]


def load_experiment(files: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The experiment of ``files`` (default ``DEFAULT_EXPERIMENT``) with ``overrides``: a key of
    ``ExperimentConfig`` (``out=...``, ``tune.lrs=[...]``, ``systems.maml.overrides=[...]``) sets the
    experiment; any other key is a run-config override for every system (``data.root=...``).

    Raises:
        ConfigError: unknown keys, bad values, or an inconsistent experiment (``check_experiment``).
    """
    own = {f.name for f in fields(ExperimentConfig)}
    mine = [o for o in overrides if o.split("=", 1)[0].split(".", 1)[0] in own]
    theirs = [o for o in overrides if o not in mine]
    cfg = merge_checked(OmegaConf.structured(ExperimentConfig), read_sources(list(files) or [DEFAULT_EXPERIMENT], mine))
    experiment: ExperimentConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    experiment.overrides = [*experiment.overrides, *theirs]
    check_experiment(experiment)
    return experiment


def evaluation_key(index: int) -> str:
    """The experiment key of evaluation ``index`` of ``ExperimentConfig.evaluations()``, for errors."""
    return "evaluate" if index == 0 else f"also_evaluate[{index - 1}]"


def check_experiment(experiment: ExperimentConfig) -> None:
    """Refuse what would fail late: an unknown or absent device, no systems, a warm start from an
    unknown or later system, a bad grid or criterion. Run configs are checked at the start of ``run_experiment``.

    Raises:
        ConfigError: one line naming the key.
    """
    resolve_device(experiment.device, key="device")
    names = list(experiment.systems)
    if not names:
        raise ConfigError("experiment: no systems (add systems.<name>.config=[conf/learner/<learner>.yaml])")
    for i, (name, system) in enumerate(experiment.systems.items()):
        if system.init_from is not None and system.init_from not in names[:i]:
            raise ConfigError(f"systems.{name}.init_from={system.init_from!r} is not a system listed before {name!r} "
                              f"(earlier systems: {names[:i] or 'none'})")
    tune = experiment.tune
    if tune.metric not in LOWER_IS_BETTER:
        raise ConfigError(f"tune.metric must be one of {sorted(LOWER_IS_BETTER)}, got {tune.metric!r}")
    if any(not lr > 0 for lr in tune.lrs) or tune.shots < 1 or not tune.steps or min(tune.steps) < 1:
        raise ConfigError(f"tune needs rates > 0, shots >= 1 and steps >= 1, got lrs={tune.lrs} shots={tune.shots} "
                          f"steps={tune.steps}")
    names = []
    for i, grid in enumerate(experiment.evaluations()):
        key = evaluation_key(i)
        if not grid.shots or min(grid.shots) < 1 or not grid.steps or min(grid.steps) < 0 or grid.samples < 0:
            raise ConfigError(f"{key} needs shots >= 1, steps >= 0 and samples >= 0, got shots={grid.shots} "
                              f"steps={grid.steps} samples={grid.samples}")
        if not grid.name.isidentifier() or grid.name in RESERVED_FOLDERS:
            raise ConfigError(f"{key}.name must be a plain name (letters, digits, _) other than "
                              f"{list(RESERVED_FOLDERS)}, got {grid.name!r}")
        if grid.name in names:
            raise ConfigError(f"{key}.name={grid.name!r} is taken by an earlier evaluation (every evaluation needs "
                              f"its own folder): give it another name")
        names.append(grid.name)
        if grid.metrics is not None:
            check_selection(key, grid.metrics)


def check_selection(key: str, metrics: Sequence[str], cfg: Optional[Any] = None) -> None:
    """Refuse an evaluation's metric selection (``EvaluateConfig.metrics``, at ``key``) that names none
    of the ``SUMMARY_METRICS`` its report's tables are made of, or an unknown metric, or (given the
    stage's run config ``cfg``) one that run config turns off (``evaluation.grid.check_metrics``).

    Raises:
        ConfigError: one line naming the key.
    """
    if not set(metrics) & set(SUMMARY_METRICS):
        raise ConfigError(f"{key}.metrics must include one of {', '.join(SUMMARY_METRICS)} (the report's tables are "
                          f"made of them), got {list(metrics)}")
    try:
        check_metric_names(metrics) if cfg is None else check_metrics(metrics, cfg)
    except DataError as error:
        raise ConfigError(f"{key}.metrics: {error}") from None


@dataclass
class Stage:
    """One resumable stage: done when its record ``<out>/stages/<slug>.json`` exists."""

    name: str
    record: Path

    def done(self) -> Optional[dict[str, Any]]:
        """The stage's record when it finished, else None."""
        return read_json(self.record) if self.record.is_file() else None


class Experiment:
    """Runs an ``ExperimentConfig`` stage by stage (see the module docstring).

    Args:
        experiment: the loaded experiment.
        progress: show training and evaluation progress bars.
        say: receives one progress line per stage (default: the log).
    """

    def __init__(self, experiment: ExperimentConfig, progress: bool = True,
                 say: Optional[Callable[[str], None]] = None) -> None:
        self.experiment, self.progress = experiment, progress
        self.out = Path(experiment.out).resolve()
        self.say = say or log.info
        self.device = str(resolve_device(experiment.device, key="device"))  # where tuning and evaluation run
        self.stages_total = len(experiment.systems) + len(self.candidates()) + len(experiment.evaluations())
        self.stage_number = 0

    def candidates(self) -> list[Optional[float]]:
        """Adaptation rates tried on the validation speakers: each learner's own (None), then the grid."""
        return [None, *dict.fromkeys(float(lr) for lr in self.experiment.tune.lrs)]

    def run_config(self, system: Optional[SystemConfig] = None, *extra: str) -> Any:
        """The run config of ``system`` (None: the shared part, used for evaluation)."""
        files = [*self.experiment.config, *(system.config if system else [])]
        return load_config(files, [*self.experiment.overrides, *(system.overrides if system else []), *extra])

    def stage(self, slug: str, name: str) -> Stage:
        self.stage_number += 1
        return Stage(f"[{self.stage_number}/{self.stages_total}] {name}", self.out / "stages" / f"{slug}.json")

    def finish(self, stage: Stage, record: dict[str, Any], started: float) -> dict[str, Any]:
        """Write ``stage``'s record (last, atomically) and report its wall time."""
        record = {**record, "wall_seconds": round(time.time() - started, 1)}
        write_json(stage.record, record)
        self.say(f"{stage.name}: done in {record['wall_seconds']:.0f} s")
        return record

    # ------------------------------------------------------------------ stages
    def train(self, name: str, system: SystemConfig, sources: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Stage ``train <name>``: fit into ``<out>/runs/<name>`` (resuming its ``last.ckpt`` after a kill).
        ``sources``: the earlier systems' train records, for ``init_from``. Returns the stage's record
        (``checkpoint``, its ``sha256``, ``settings_sha256`` = ``fingerprint``).

        Raises:
            ConfigError: the system was trained under another run config or warm start.
        """
        warm = f" (warm start from {system.init_from})" if system.init_from else ""
        stage = self.stage(f"train-{name}", f"train {name}{warm}")
        run_dir = self.out / "runs" / name
        fingerprint = self.fingerprint(system, sources)
        done = stage.done()
        if done is not None and Path(done["checkpoint"]).is_file():
            self.check_unchanged(name, done.get("settings_sha256"), fingerprint, [run_dir, stage.record])
            self.say(f"{stage.name}: done before, skipped ({done['checkpoint']})")
            return done
        extra = [f"run_dir={run_dir}"]
        if (run_dir / "checkpoints" / "last.ckpt").is_file():  # as ``fit ckpt_path=last``: the current config
            extra.append("ckpt_path=last")
            self.say(f"{stage.name}: resuming {run_dir / 'checkpoints' / 'last.ckpt'}")
        else:
            self.say(f"{stage.name}: training into {run_dir}")
        if system.init_from:
            extra.append(f"init_from={sources[system.init_from]['checkpoint']}")
        started = time.time()
        result = run(self.run_config(system, *extra), "fit", progress=self.progress)
        if result.last_checkpoint is None:
            raise ConfigError(f"systems.{name}: fit wrote no last.ckpt in {run_dir} (is trainer.max_steps > 0?)")
        return self.finish(stage, {"system": name, "checkpoint": str(result.last_checkpoint),
                                   "sha256": file_sha256(result.last_checkpoint), "init_from": system.init_from,
                                   "settings_sha256": fingerprint}, started)

    def fingerprint(self, system: SystemConfig, sources: dict[str, dict[str, Any]]) -> str:
        """SHA-256 of what a system's training depends on: its run config's settings (``settings_sha256``,
        less ``NOT_TRAINING``) and the checkpoint it warm-starts from (that system's recorded SHA-256)."""
        source = sources[system.init_from]["sha256"] if system.init_from else ""
        text = settings_sha256(self.run_config(system), NOT_TRAINING) + f"init_from: {source}"
        return hashlib.sha256(text.encode()).hexdigest()

    @staticmethod
    def check_unchanged(name: str, recorded: Optional[str], fingerprint: str, remove: list[Path]) -> None:
        """Refuse to reuse a system trained under another config (or from another warm start):
        nothing is deleted; the message names what to remove to retrain it. ``recorded`` None: a
        record from before settings fingerprints, taken as it is."""
        if recorded is not None and recorded != fingerprint:
            paths = " and ".join(str(p) for p in remove)
            raise ConfigError(f"systems.{name} changed (its run config or its warm start) since it was trained: "
                              f"remove {paths} to retrain it, or set another out=")

    def tune(self, trained: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Stages ``tune lr=...``: every candidate rate on the validation speakers, for every trained
        system (name -> its train record). Returns the choice (also ``<out>/tune/choice.json``):
        every score (system -> step count -> label -> score; step counts as strings, as in JSON) and each
        system's chosen label per step count (``chosen_rates`` turns them into rates)."""
        tune = self.experiment.tune
        cfg = self.run_config(None, *([] if tune.metric in ("wer", "cer") else ["fewshot.wer=false"]))
        names, counts = list(trained), [str(n) for n in tune.steps]
        paths, hashes = [r["checkpoint"] for r in trained.values()], [r["sha256"] for r in trained.values()]
        setting = {"sha256": hashes, "steps": list(tune.steps), "shots": tune.shots, "metric": tune.metric,
                   "config_sha256": config_sha256(cfg)}  # what a finished tuning stage must match to be reused
        scores: dict[str, dict[str, dict[str, float]]] = {name: {n: {} for n in counts} for name in names}
        own: dict[str, Optional[float]] = {}  # system -> its own fixed rate, read once a stage has to run
        for lr in self.candidates():
            label = "own" if lr is None else f"{lr:g}"
            stage = self.stage(f"tune-lr-{label}", f"tune lr={label} on the validation speakers")
            done = stage.done()
            if done is None or any(done.get(k) != v for k, v in setting.items()):
                # a system whose own rate is this rate adapts exactly as in the 'own' stage (run first): copied
                own = own or {name: load_learner(path).own_adapt_rate() for name, path in zip(names, paths)}
                same = [name for name in names if lr is not None and own[name] == lr]
                self.say(f"{stage.name}: K={tune.shots}, steps={list(tune.steps)}"
                         + (f" (the own rate of {', '.join(same)}: scores copied)" if same else ""))
                started = time.time()
                cells = {name: {n: scores[name][n]["own"] for n in counts} for name in same}
                scored = {name: path for name, path in zip(names, paths) if name not in same}
                cells.update(self.tune_scores(cfg, scored, lr, self.out / "tune" / f"lr-{label}") if scored else {})
                done = self.finish(stage, {"lr": lr, "checkpoints": paths, **setting,
                                           "scores": {name: cells[name] for name in names}, "copied_from_own": same,
                                           "device": self.device}, started)
            else:
                self.say(f"{stage.name}: done before, skipped")
            for name in names:
                for n in counts:
                    scores[name][n][label] = done["scores"][name][n]
        choice = {"metric": tune.metric, "shots": tune.shots, "steps": list(tune.steps), "split": "val",
                  "scores": scores,
                  "chosen": {name: {n: choose_rate(scores[name][n], tune.metric) for n in counts} for name in names}}
        write_json(self.out / "tune" / "choice.json", choice)
        return choice

    def tune_scores(self, cfg: Any, checkpoints: dict[str, str], lr: Optional[float], out: Path) -> dict[str, dict[str, float]]:
        """Every system (name -> checkpoint) adapting to the validation speakers with ``lr`` (None: its own
        rate), scored by ``tune.metric`` only (no PESQ; no judge unless it is the criterion; no reference rows),
        into ``out``.
        Returns system -> tuned step count (a string, as in JSON) -> mean score."""
        tune = self.experiment.tune
        results = run_evaluation(cfg, list(checkpoints.values()), [tune.shots], tune.steps, out, samples=0, split="val",
                                 adapt_lrs=[lr] * len(checkpoints), names=list(checkpoints), metrics=[tune.metric],
                                 references=False, device=self.device)
        cells: dict[str, dict[str, float]] = {name: {} for name in checkpoints}
        for r in results["rows"]:
            if r["shots"] is not None:
                cells[r["system"]][str(r["steps"])] = r["metrics"][tune.metric]["mean"]
        return cells

    def evaluate(self, trained: dict[str, dict[str, Any]], rates: dict[str, dict[int, Optional[float]]],
                 grid: EvaluateConfig) -> dict[str, Any]:
        """Stage ``grid.name``: the test grid, every trained system adapting with its chosen rates
        (system -> evaluated step count -> rate)."""
        label = "" if grid is self.experiment.evaluate else f" ({grid.name})"
        stage = self.stage(grid.name, f"evaluate on the test speakers{label}")
        paths, hashes = [r["checkpoint"] for r in trained.values()], [r["sha256"] for r in trained.values()]
        out = self.out / grid.name
        done = stage.done()
        cfg = self.run_config(None, *grid.overrides)
        setting = {"sha256": hashes, "rates": [{str(n): lr for n, lr in per_steps.items()} for per_steps in rates.values()],
                   "grid": {"shots": list(grid.shots), "steps": list(grid.steps), "samples": grid.samples},
                   "config_sha256": config_sha256(cfg),  # rates as JSON keeps them
                   "metrics": None if grid.metrics is None else list(grid.metrics)}  # a record without it: None
        if done is not None and all(done.get(k) == v for k, v in setting.items()):
            self.say(f"{stage.name}: done before, skipped")
            return read_json(out / "results.json")
        self.say(f"{stage.name}: K={grid.shots}, steps={grid.steps}")
        started = time.time()
        results = run_evaluation(cfg, paths, grid.shots, grid.steps, out, samples=grid.samples,
                                 adapt_lrs=list(rates.values()), names=list(trained), metrics=grid.metrics,
                                 device=self.device)
        self.finish(stage, {"checkpoints": paths, **setting, "device": self.device}, started)
        return results

    def run(self) -> Path:
        """Every stage in order; returns the path of ``report.md``."""
        for name, system in self.experiment.systems.items():
            self.run_config(system)  # a bad key in any system fails now, before hours of training
        evaluations = self.experiment.evaluations()
        grid_workers(self.run_config(None).fewshot.workers)
        for i, grid in enumerate(evaluations):  # each evaluation's worker count and metrics, before training
            cfg = self.run_config(None, *grid.overrides)
            grid_workers(cfg.fewshot.workers)
            if grid.metrics is not None:
                check_selection(evaluation_key(i), grid.metrics, cfg)
        for folder in ("stages", "tune"):
            (self.out / folder).mkdir(parents=True, exist_ok=True)
        trained: dict[str, dict[str, Any]] = {}
        for name, system in self.experiment.systems.items():
            trained[name] = self.train(name, system, trained)
        choice = self.tune(trained)
        main, report = evaluations[0], self.out / report_name(evaluations[0].name)
        finished: list[tuple[EvaluateConfig, dict[str, Any]]] = []  # (evaluation, its results), in stage order
        for grid in evaluations:
            finished.append((grid, self.evaluate(trained, chosen_rates(choice, grid.steps), grid)))
            if grid is not main:
                write_text(self.out / report_name(grid.name), experiment_markdown(self.experiment, finished[-1][1], choice, grid))
            write_text(report, experiment_markdown(self.experiment, finished[0][1], choice, main, finished[1:]))
        write_text(self.out / "experiment.yaml", OmegaConf.to_yaml(OmegaConf.structured(self.experiment)))
        return report


def report_name(evaluation: str) -> str:
    """The report file of the evaluation named ``evaluation`` (``EvaluateConfig.name``)."""
    return "report.md" if evaluation == EvaluateConfig.name else f"report-{evaluation}.md"


def choose_rate(scores: dict[str, float], metric: str) -> str:
    """The label ('own' or a rate) with the best finite ``metric``; 'own' when none is finite."""
    finite = {label: v for label, v in scores.items() if math.isfinite(v)}
    if not finite:
        return "own"
    pick = min if LOWER_IS_BETTER[metric] else max
    return pick(finite, key=finite.__getitem__)


def chosen_rates(choice: dict[str, Any], steps: Sequence[int]) -> dict[str, dict[int, Optional[float]]]:
    """System -> each of ``steps`` -> the adaptation rate of a tuning choice ('own' -> None: the learner's
    own rate): the one chosen at the largest tuned step count not above it, or at the smallest tuned
    count for step counts below them all."""
    out = {}
    for name, per_count in choice["chosen"].items():
        tuned = sorted(int(n) for n in per_count)
        rates = {}
        for n in steps:
            below = [t for t in tuned if t <= n]
            label = per_count[str(below[-1] if below else tuned[0])]
            rates[n] = None if label == "own" else float(label)
        out[name] = rates
    return out


def experiment_markdown(experiment: ExperimentConfig, results: dict[str, Any], tuning: dict[str, Any],
                        grid: EvaluateConfig, also: Sequence[tuple[EvaluateConfig, dict[str, Any]]] = ()) -> str:
    """The report of the evaluation ``grid`` (its ``results``): systems with their training cost, warm
    start and chosen rate; the validation table that chose the rates; the evaluation tables
    (``results_markdown``; a metric selection is stated); then the paired differences of the further evaluations ``also``
    (``also_markdown``: (its config, its results))."""
    costs = {c["system"]: c for c in results["checkpoints"]}
    lines = ["# Few-shot experiment", "",
             "| system | learner | warm start from | training cost | adaptation rate (chosen on val) |",
             "|---|---|---|---|---|"]
    for name, system in experiment.systems.items():
        c = costs[name]
        chosen = tuning["chosen"][name]
        shown = next(iter(chosen.values())) if len(chosen) == 1 else ", ".join(f"{n} steps: {v}" for n, v in chosen.items())
        lines.append(f"| {name} | {c['learner']} | {system.init_from or '-'} | {format_cost(c.get('training_cost'))} | "
                     f"{shown} |")
    arrow = "lower is better" if LOWER_IS_BETTER[tuning["metric"]] else "higher is better"
    for count in tuning["steps"]:
        labels = list(next(iter(tuning["scores"].values()))[str(count)])
        lines += ["", f"## Choosing the adaptation rate: validation speakers, K={tuning['shots']}, {count} steps, "
                      f"mean {tuning['metric']} ({arrow}); 'own' = the learner's own rate (MAML: its learned rates)", "",
                  "| system | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for name, per_count in tuning["scores"].items():
            lines.append(f"| {name} | " + " | ".join(f"{per_count[str(count)][label]:.3f}" for label in labels) + " |")
    if grid.overrides:
        lines += ["", f"Evaluated with these run-config overrides (training and tuning did not see them): "
                      f"`{' '.join(grid.overrides)}`; {len(results['speakers'])} test speakers."]
    if grid.metrics is not None:
        lines += ["", f"Scored only {', '.join(grid.metrics)} (this evaluation's `metrics`)."]
    lines += ["", summary_markdown(results), "", headroom_markdown(results), "", results_markdown(results),
              f"Listening page: {grid.name}/report.html", ""]
    return "\n".join(lines + [also_markdown(g, r) for g, r in also])


def also_markdown(grid: EvaluateConfig, results: dict[str, Any]) -> str:
    """A further evaluation in the main report: what it evaluated, where its report is, and its paired
    differences against the reference system as one table (rows system x K x steps, columns the
    ``SUMMARY_METRICS`` it has: mean difference [speaker-clustered bootstrap 95 % CI])."""
    differences = results.get("differences") or []
    lines = [f"# Also evaluated: {grid.name} ({len(results['speakers'])} {results.get('split', 'test')} speakers, "
             f"K={list(grid.shots)}, steps={list(grid.steps)}; the same systems and chosen rates)", "",
             f"Its report: {report_name(grid.name)}; listening page: {grid.name}/report.html"
             + (f"; run-config overrides `{' '.join(grid.overrides)}`" if grid.overrides else "")
             + (f"; scored only {', '.join(grid.metrics)}" if grid.metrics is not None else "") + ".", ""]
    if not differences:
        return "\n".join(lines + ["One system: no paired differences.", ""])
    metrics = [m for m in SUMMARY_METRICS if any(d["metric"] == m for d in differences)]
    cells: dict[tuple[str, int, int], dict[str, str]] = {}
    for d in differences:
        cells.setdefault((d["system"], d["shots"], d["steps"]), {})[d["metric"]] = (
            f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")
    lines += [f"Paired differences against {differences[0]['against']} (speaker-clustered bootstrap 95 % CI):", "",
              "| system | K | steps | " + " | ".join(metrics) + " |", "|---|---|---|" + "---|" * len(metrics)]
    lines += [f"| {system} | {shots} | {steps} | " + " | ".join(found.get(m, "-") for m in metrics) + " |"
              for (system, shots, steps), found in cells.items()]
    return "\n".join(lines + [""])


def headroom_markdown(results: dict[str, Any], seed: int = 0) -> str:
    """How much a faster learner could win by: for the reference system (the first), at each K, the
    paired difference between its most-steps cell and each cell with fewer steps (speaker-clustered
    bootstrap 95 % CI). A learner that reached the reference's most-steps quality in fewer steps
    would beat the reference there by about this much; every summary metric that has values."""
    grid = [r for r in results["rows"] if r["shots"] is not None]
    reference = grid[0]["system"]
    metrics = [m for m in SUMMARY_METRICS if m in results["metrics"]]
    clusters = [speaker for speaker, sets in results["speakers"].items() for _ in sets["query"]]
    most = max(r["steps"] for r in grid)
    lines = [f"## Room to win: {reference} at {most} steps minus {reference} at fewer steps (test speakers, paired, "
             f"speaker-clustered bootstrap 95 % CI)", "",
             "| K | steps | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    cells = {(r["shots"], r["steps"]): r for r in grid if r["system"] == reference}
    for (shots, steps), row in cells.items():
        if steps == most:
            continue
        best = cells[(shots, most)]
        diffs = [paired_bootstrap(row["metrics"][m]["values"], best["metrics"][m]["values"], clusters, seed=seed)
                 for m in metrics]
        lines.append(f"| {shots} | {steps} | " + " | ".join(
            f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" for d in diffs) + " |")
    return "\n".join(lines)


#: The columns of the summary table, when the evaluation has them.
SUMMARY_METRICS = ("speaker_sim", "wer", "mcd", "f0_rmse")


def summary_markdown(results: dict[str, Any]) -> str:
    """One table, rows = reference rows then system x K x steps, columns = ``SUMMARY_METRICS`` (mean ± 95 % CI)."""
    metrics = [m for m in SUMMARY_METRICS if m in results["metrics"]]
    lines = ["## Summary (test speakers; mean ± 95 % CI over queries)", "",
             "| system | K | steps | " + " | ".join(metrics) + " |", "|---|---|---|" + "---|" * len(metrics)]
    for row in results["rows"]:
        shots, steps = ("-", "-") if row["shots"] is None else (row["shots"], row["steps"])
        lines.append(f"| {row['system']} | {shots} | {steps} | "
                     + " | ".join(format_mean_ci(row["metrics"][m]) for m in metrics) + " |")
    return "\n".join(lines)


def run_experiment(experiment: ExperimentConfig, progress: bool = True,
                   say: Optional[Callable[[str], None]] = None) -> Path:
    """Run (or resume) ``experiment``; returns the path of its ``report.md``."""
    return Experiment(experiment, progress, say).run()
