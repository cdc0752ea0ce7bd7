"""``fit``, ``validate`` and ``test``: data module + learner + Lightning Trainer, from a config.

``run(cfg, stage)`` is the testable function; the CLI is a thin shell around it. Each run has a
directory ``<trainer.default_root_dir>/<learner>/version_<N>`` (or ``run_dir``) holding
``config.yaml``, ``checkpoints/`` (``last.ckpt`` + best on ``val/mel_loss``), what its loggers write
(``trainer.logger``; by default ``logs/metrics.csv`` and ``tensorboard/`` events when tensorboard is
installed), and ``images/``; ``trainer.callbacks`` adds Lightning callbacks named by class path.
SIGTERM or SIGINT during ``fit`` saves the step reached to ``checkpoints/last.ckpt`` and raises
``TrainingInterrupted``. ``init_from=CKPT`` warm-starts a fresh ``fit`` from another run's weights
(``learners.warm_start``); its ``config.yaml`` records the source's SHA-256 (``init_from_sha256``).
"""
from __future__ import annotations

import copy
import csv
import importlib
import importlib.util
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities.exceptions import MisconfigurationException, SIGTERMException

from lightning_tts.audio import FeatureParams
from lightning_tts.callbacks.checkpoint import AtomicCheckpointIO, RunCheckpoint
from lightning_tts.callbacks.cost import TrainingCost
from lightning_tts.callbacks.embeddings import EmbeddingProjectionCallback, ProjectionConfig
from lightning_tts.callbacks.fewshot import FewShotConfig, FewShotEvalCallback
from lightning_tts.callbacks.images import ValidationImagesCallback
from lightning_tts.callbacks.signals import SignalCheckpoint, TrainingInterrupted
from lightning_tts.data.datamodule import build_datamodule
from lightning_tts.errors import ConfigError, LightningTTSError
from lightning_tts.learners import (
    WarmStartConfig,
    build_learner,
    get_learner,
    learner_from_checkpoint,
    load_learner,
    read_checkpoint,
    warm_start,
)
from lightning_tts.learners.base import BaseLearner
from lightning_tts.models.vocoder import VocoderConfig
from lightning_tts.schema import build, save_config, to_container

log = logging.getLogger(__name__)
RUN_DIR_ENV = "LIGHTNING_TTS_RUN_DIR"  # shared with the processes Lightning launches for DDP


@dataclass
class TrainerConfig:
    """Arguments of ``pytorch_lightning.Trainer``, one to one (the ``trainer`` section), plus where
    runs go.

    Attributes:
        val_check_interval: int: every N training batches; float: a fraction of an epoch.
        limit_train_batches: int: batches; float: a fraction.
        default_root_dir: runs go to ``<default_root_dir>/<learner>/version_<N>``.
        logger: loggers by name, from ``csv``, ``tensorboard``, ``wandb``, ``mlflow`` (``LOGGERS``);
            None: ``csv``, plus ``tensorboard`` when it is installed; ``[]``: none.
        callbacks: more Lightning callbacks, each a class path (``pytorch_lightning.callbacks.Timer``)
            or ``{class_path: ..., init_args: {...}}``.
        Others: as ``pytorch_lightning.Trainer``.
    """

    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    max_steps: int = -1
    max_epochs: Optional[int] = None
    val_check_interval: Any = None
    check_val_every_n_epoch: Optional[int] = 1
    log_every_n_steps: int = 10
    gradient_clip_val: Optional[float] = None
    accumulate_grad_batches: int = 1
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    deterministic: bool = False
    enable_progress_bar: bool = True
    default_root_dir: str = "artifacts/runs"
    logger: Optional[list[str]] = None
    callbacks: list[Any] = field(default_factory=list)


NOT_TRAINER_ARGS = ("default_root_dir", "logger", "callbacks")  # TrainerConfig fields this module turns into arguments


@dataclass
class RunResult:
    """Where a run wrote its artefacts, and the metrics it ended with."""

    run_dir: Path
    learner: BaseLearner
    best_checkpoint: Optional[Path]
    last_checkpoint: Optional[Path]
    metrics: dict[str, float]


def _versions(parent: Path) -> list[Path]:
    """Existing ``version_N`` directories, in N order."""
    found = [p for p in parent.glob("version_*") if p.name.split("_")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("_")[-1]))


def _is_ddp_child() -> bool:
    """True in a DDP rank that Lightning started from rank 0 of this run (it uses rank 0's run directory)."""
    return bool(os.environ.get(RUN_DIR_ENV)) and os.environ.get("LOCAL_RANK", "0") != "0"


def run_dir_of(checkpoint: Path) -> Optional[Path]:
    """The run directory holding ``checkpoint`` as ``<run>/checkpoints/<file>`` (a ``config.yaml``
    beside ``checkpoints/``), or None for a checkpoint kept anywhere else."""
    folder = checkpoint.resolve().parent
    if folder.name == "checkpoints" and (folder.parent / "config.yaml").is_file():
        return folder.parent
    return None


def _new_run_dir(cfg: DictConfig) -> Path:
    """The directory of a new run: the parent process's under DDP, ``slurm_<job id>`` under SLURM,
    else the next ``version_N``."""
    parent = Path(cfg.trainer.default_root_dir) / cfg.learner.name
    if _is_ddp_child():
        return Path(os.environ[RUN_DIR_ENV])
    if os.environ.get("SLURM_JOB_ID"):
        return parent / f"slurm_{os.environ['SLURM_JOB_ID']}"
    versions = _versions(parent)
    next_n = int(versions[-1].name.split("_")[-1]) + 1 if versions else 0
    return parent / f"version_{next_n}"


def resolve_run_dir(cfg: DictConfig) -> tuple[Path, Optional[str]]:
    """(run directory, checkpoint to resume from) for a config.

    ``ckpt_path=last`` resumes the newest run of this learner that has ``checkpoints/last.ckpt``;
    ``ckpt_path=FILE`` continues in that checkpoint's run directory, or starts a new run directory
    when the file is not inside one (``run_dir_of``). ``run_dir`` set: that directory.

    Raises:
        LightningTTSError: a checkpoint to resume that does not exist.
    """
    parent = Path(cfg.trainer.default_root_dir) / cfg.learner.name
    ckpt = cfg.ckpt_path
    if ckpt == "last":
        root = Path(cfg.run_dir) if cfg.run_dir else next(
            (v for v in reversed(_versions(parent)) if (v / "checkpoints" / "last.ckpt").is_file()), None)
        if root is None or not (root / "checkpoints" / "last.ckpt").is_file():
            raise LightningTTSError(f"ckpt_path=last: no checkpoints/last.ckpt under {cfg.run_dir or parent}")
        return root, str(root / "checkpoints" / "last.ckpt")
    if ckpt:
        path = Path(ckpt)
        if not path.is_file():
            raise LightningTTSError(f"ckpt_path not found: {ckpt}")
        if cfg.run_dir:
            return Path(cfg.run_dir), str(path)
        home = run_dir_of(path)
        if home is None:
            home = _new_run_dir(cfg)
            if not _is_ddp_child():
                log.info("ckpt_path=%s is not inside a run directory: resuming it in the new run %s", ckpt, home)
        return home, str(path)
    if cfg.run_dir:
        return Path(cfg.run_dir), None
    return _new_run_dir(cfg), None


def _installed(module: str) -> bool:
    """True when ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that a ``metrics.csv`` already there (a resumed run's) is kept
    and appended to under its columns, where Lightning's deletes it when the writer starts."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives ``ckpt_path=last``: the resumed run's rows follow
    the earlier ones (as TensorBoard's event files do; steps logged after the last checkpoint of a
    killed run appear twice), and a new column rewrites the file with every row kept."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def _csv_logger(run_dir: Path, root: Path) -> Logger:
    """``<run>/logs/metrics.csv``, kept across resumes."""
    return AppendingCSVLogger(save_dir=str(run_dir), name="logs", version="")


def _tensorboard_logger(run_dir: Path, root: Path) -> Logger:
    """``<run>/tensorboard/`` event files."""
    return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)


def _wandb_logger(run_dir: Path, root: Path) -> Logger:
    """Weights & Biases, files under ``<run>/wandb/``; offline (``wandb sync`` uploads later) unless
    ``WANDB_API_KEY`` is set or ``WANDB_MODE=online``; project ``$WANDB_PROJECT`` or lightning_tts."""
    offline = not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") != "online"
    return WandbLogger(name=f"{run_dir.parent.name}/{run_dir.name}", save_dir=str(run_dir), offline=offline,
                       project=os.environ.get("WANDB_PROJECT", "lightning_tts"))


def _mlflow_logger(run_dir: Path, root: Path) -> Logger:
    """MLflow, experiment ``lightning_tts``: at ``$MLFLOW_TRACKING_URI``, else in the SQLite store
    ``<trainer.default_root_dir>/mlflow.db`` with artifacts in ``mlartifacts/`` beside it (shared by
    all runs, so the MLflow UI compares them; MLflow 3 refuses new file stores)."""
    name = f"{run_dir.parent.name}/{run_dir.name}"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return MLFlowLogger(experiment_name="lightning_tts", run_name=name, tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    return MLFlowLogger(experiment_name="lightning_tts", run_name=name, tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                        artifact_location=(root / "mlartifacts").as_uri())


# trainer.logger names -> (the module it needs, which is also its pip package, or None; its factory(run_dir, root))
LOGGERS: dict[str, tuple[Optional[str], Callable[[Path, Path], Logger]]] = {
    "csv": (None, _csv_logger),
    "tensorboard": ("tensorboard", _tensorboard_logger),
    "wandb": ("wandb", _wandb_logger),
    "mlflow": ("mlflow", _mlflow_logger),
}


def logger_names(names: Optional[Sequence[str]]) -> list[str]:
    """The loggers a run uses: ``names`` (``trainer.logger``) checked, each once, or for None the
    default: ``csv``, plus ``tensorboard`` when it is installed.

    Raises:
        ConfigError: an unknown name, or one whose package is not installed.
    """
    if names is None:
        return ["csv"] + (["tensorboard"] if _installed("tensorboard") else [])
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"trainer.logger: unknown logger '{name}' (choose from {', '.join(LOGGERS)})")
        package = LOGGERS[name][0]
        if package is not None and not _installed(package):
            raise ConfigError(f"trainer.logger: '{name}' needs the {package} package (pip install {package})")
    return list(dict.fromkeys(names))


def build_loggers(names: Optional[Sequence[str]], run_dir: Path, root: Path) -> list[Logger]:
    """The run's loggers (``logger_names``) writing into ``run_dir``; ``root`` is
    ``trainer.default_root_dir`` (for stores that all runs share).

    Raises:
        ConfigError: see ``logger_names``.
    """
    return [LOGGERS[name][1](run_dir, root) for name in logger_names(names)]


def callback_class(spec: Any, key: str) -> tuple[type[pl.Callback], dict[str, Any]]:
    """The Lightning callback class and its keyword arguments that a ``trainer.callbacks`` item
    names: a dotted class path, or ``{class_path: ..., init_args: {...}}``.

    Args:
        spec: the item.
        key: its config key for messages (``trainer.callbacks[0]``).

    Raises:
        ConfigError: a malformed item, a class that cannot be imported, or one that is not a
            ``pytorch_lightning.Callback``.
    """
    if isinstance(spec, str):
        path, args = spec, {}
    elif (isinstance(spec, Mapping) and isinstance(spec.get("class_path"), str)
          and set(spec) <= {"class_path", "init_args"} and isinstance(spec.get("init_args") or {}, Mapping)):
        path, args = spec["class_path"], dict(spec.get("init_args") or {})
    else:
        raise ConfigError(f"{key}={spec!r}: give a class path or {{class_path: CLASS, init_args: {{...}}}}")
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{key}={path}: cannot import it ({detail})") from err
    if not (isinstance(cls, type) and issubclass(cls, pl.Callback)):
        raise ConfigError(f"{key}={path}: not a pytorch_lightning.Callback class")
    return cls, args


def build_callbacks(specs: Sequence[Any]) -> list[pl.Callback]:
    """The ``trainer.callbacks`` items (see ``callback_class``), instantiated.

    Raises:
        ConfigError: see ``callback_class``; arguments the class refuses.
    """
    built = []
    for i, spec in enumerate(specs):
        cls, args = callback_class(spec, f"trainer.callbacks[{i}]")
        try:
            built.append(cls(**args))
        except (TypeError, ValueError, MisconfigurationException) as err:
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            path = spec if isinstance(spec, str) else spec["class_path"]
            raise ConfigError(f"trainer.callbacks[{i}]={path}: bad init_args {args} ({detail})") from err
    return built


def check_trainer_config(trainer: Mapping[str, Any]) -> None:
    """Fail early (before data is read) on loggers or callbacks the run could not build.

    Raises:
        ConfigError: see ``logger_names`` and ``callback_class``.
    """
    logger_names(trainer.get("logger"))
    for i, spec in enumerate(trainer.get("callbacks") or ()):
        callback_class(spec, f"trainer.callbacks[{i}]")


def build_trainer(cfg: DictConfig, run_dir: Path, learner: BaseLearner, progress: bool = True,
                  callbacks: Sequence[pl.Callback] = ()) -> pl.Trainer:
    """A Lightning Trainer from ``cfg.trainer`` with the run's loggers and callbacks (the best
    checkpoint is chosen on ``learner.checkpoint_monitor()``; SIGTERM/SIGINT save ``last.ckpt`` and
    stop, see ``SignalCheckpoint``), writing checkpoints atomically (``AtomicCheckpointIO``).

    Args:
        callbacks: more callbacks, after the run's own and those of ``trainer.callbacks``.

    Raises:
        ConfigError: a ``trainer.logger`` or ``trainer.callbacks`` item it cannot build.
    """
    from pytorch_lightning.callbacks import LearningRateMonitor

    settings = to_container(cfg.trainer)
    loggers = build_loggers(settings["logger"], run_dir, Path(settings["default_root_dir"]))
    rates = [LearningRateMonitor(logging_interval="step")] if loggers else []  # it refuses a trainer without loggers
    monitor, mode = learner.checkpoint_monitor()
    checkpoints = RunCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="best-step{step}",
                                auto_insert_metric_name=False, monitor=monitor, mode=mode, save_last=True,
                                save_top_k=1)
    options = {k: v for k, v in settings.items() if k not in NOT_TRAINER_ARGS}
    options["enable_progress_bar"] = options.get("enable_progress_bar", True) and progress
    return pl.Trainer(**options, default_root_dir=str(run_dir), logger=loggers, plugins=[AtomicCheckpointIO()],
                      callbacks=[checkpoints, ValidationImagesCallback(run_dir / "images"),
                                 FewShotEvalCallback(run_dir / "fewshot", build(FewShotConfig, cfg.fewshot),
                                                     build(VocoderConfig, cfg.vocoder), seed=cfg.data.splits.seed),
                                 EmbeddingProjectionCallback(run_dir / "embeddings", build(ProjectionConfig, cfg.projection),
                                                             seed=cfg.seed),
                                 *rates, SignalCheckpoint(checkpoints), TrainingCost(),
                                 *build_callbacks(settings["callbacks"]), *callbacks],
                      use_distributed_sampler=False, inference_mode=False, enable_model_summary=False)


def _fit(trainer: pl.Trainer, learner: BaseLearner, dm: pl.LightningDataModule, resume: Optional[str]) -> None:
    """``trainer.fit`` with SIGTERM/SIGINT handled by the trainer's ``SignalCheckpoint``.

    Raises:
        TrainingInterrupted: a signal stopped training (after saving its step, if it had trained one).
    """
    stop = next(cb for cb in trainer.callbacks if isinstance(cb, SignalCheckpoint))
    with stop.armed(trainer):
        try:
            trainer.fit(learner, datamodule=dm, ckpt_path=resume)
        except SIGTERMException as err:  # Lightning's handler saw SIGTERM before training started
            raise TrainingInterrupted(signal.SIGTERM, trainer.global_step, None) from err


def _recorded(cfg: DictConfig, record: Optional[dict[str, Any]], source: Optional[str]) -> DictConfig:
    """A copy of ``cfg`` that names the warm start the run's weights come from (``record``, None: none):
    ``init_from`` = ``source``, its SHA-256 and options."""
    cfg = copy.deepcopy(cfg)
    cfg.init_from, cfg.init_from_sha256 = (source, record["sha256"]) if record else (None, None)
    if record:
        cfg.warm_start.offset_schedules = record["offset_schedules"]
        cfg.warm_start.freeze_aligner = record["freeze_aligner"]
    return cfg


def start_weights(cfg: DictConfig, learner: BaseLearner, resume: Optional[str]) -> DictConfig:
    """Where a fit's weights start: a resumed run checks its checkpoint's features (Lightning then
    restores it, with its own warm start) and ignores ``init_from``; a fresh run with ``init_from``
    is warm-started (``learners.warm_start``).

    Returns:
        The config to save as the run's ``config.yaml``: with the warm start's path and SHA-256.

    Raises:
        LightningTTSError: a checkpoint that does not fit (one line naming ``init_from`` or the file).
        ConfigError: ``warm_start.freeze_aligner=true`` without ``init_from``.
    """
    if resume:
        ckpt = read_checkpoint(resume)
        learner_from_checkpoint(ckpt, resume).check_features(FeatureParams.from_config(cfg.features))
        record = ckpt.get("warm_start")
        if cfg.init_from and cfg.init_from != (record or {}).get("path"):
            log.info("init_from=%s ignored: resuming %s restores that run's own weights", cfg.init_from, resume)
        return _recorded(cfg, record, record["path"] if record else None)
    options = build(WarmStartConfig, cfg.warm_start, "warm_start")
    if not cfg.init_from:
        if options.freeze_aligner:
            raise ConfigError("warm_start.freeze_aligner=true needs init_from=CKPT (the aligner to keep)")
        return cfg
    record = warm_start(learner, cfg.init_from, options, cfg.init_from_sha256)
    log.info("init_from %s: copied %s from a %s checkpoint at step %d; the schedules start at step %d",
             cfg.init_from, ", ".join(record["copied"]), record["source_learner"], record["source_global_step"],
             record["schedule_offset"])
    return _recorded(cfg, record, cfg.init_from)


def run(cfg: DictConfig, stage: str = "fit", checkpoint: Optional[str] = None, progress: bool = True,
        adapt_steps: Optional[int] = None, callbacks: Sequence[pl.Callback] = ()) -> RunResult:
    """Train (``fit``), or score a checkpoint on validation (``validate``) or few-shot test tasks (``test``).

    Args:
        cfg: the resolved configuration.
        stage: ``fit``, ``validate`` or ``test``.
        checkpoint: the checkpoint to score (validate/test).
        progress: progress bars.
        adapt_steps: adaptation steps used by validate/test (default: the checkpoint's).
        callbacks: more Lightning callbacks for the Trainer.

    Raises:
        ConfigError: a ``trainer.logger`` or ``trainer.callbacks`` item it cannot build (before data is read).
        TrainingInterrupted: ``fit`` stopped by SIGTERM or SIGINT (``last.ckpt`` holds the step it reached).
    """
    check_trainer_config(to_container(cfg.trainer))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if stage == "fit":
        learner_cls = get_learner(cfg.learner.name)
        run_dir, resume = resolve_run_dir(cfg)
        if cfg.init_from and not resume and not Path(cfg.init_from).is_file():
            raise LightningTTSError(f"init_from not found: {cfg.init_from}")  # before the data is prepared
        os.environ[RUN_DIR_ENV] = str(run_dir)
        dm = build_datamodule(cfg, learner_cls.batches, progress)
        learner = build_learner(cfg, speakers=dm.split.train, symbols=dm.text.symbols)
        cfg = start_weights(cfg, learner, resume)
    else:
        if not checkpoint:
            raise LightningTTSError(f"{stage} needs --checkpoint CKPT")
        learner = load_learner(checkpoint)
        learner.check_features(FeatureParams.from_config(cfg.features))
        if adapt_steps is not None:
            learner.adapt_steps = adapt_steps
        run_dir, resume = Path(checkpoint).resolve().parent.parent, None
        dm = build_datamodule(cfg, learner.batches, progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(cfg, run_dir, learner, progress, callbacks)
    if trainer.is_global_zero:
        save_config(cfg, run_dir / ("config.yaml" if stage == "fit" else f"config_{stage}.yaml"))
        log.info("%s: %s", cfg.learner.name, dm.describe())
    try:
        if stage == "fit":
            _fit(trainer, learner, dm, resume)
        elif stage == "validate":
            trainer.validate(learner, datamodule=dm)
        else:
            trainer.test(learner, datamodule=dm)
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
    ckpt_cb = trainer.checkpoint_callback
    best = Path(ckpt_cb.best_model_path) if ckpt_cb is not None and ckpt_cb.best_model_path else None
    last = run_dir / "checkpoints" / "last.ckpt"
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return RunResult(run_dir, learner, best, last if last.is_file() else None, metrics)
