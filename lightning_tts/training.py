"""``fit``, ``validate`` and ``test``: data module + learner + Lightning Trainer, from a config.

``run(cfg, stage)`` is the testable function; the CLI is a thin shell around it. Each run has a
directory ``<trainer.default_root_dir>/<learner>/version_<N>`` (or ``run_dir``) holding
``config.yaml``, ``checkpoints/`` (``last.ckpt`` + best on ``val/mel_loss``), ``logs/metrics.csv``,
``tensorboard/`` events when tensorboard is installed, and ``images/``.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
from omegaconf import DictConfig

from lightning_tts.audio import FeatureParams
from lightning_tts.callbacks.checkpoint import RunCheckpoint
from lightning_tts.callbacks.embeddings import EmbeddingProjectionCallback
from lightning_tts.callbacks.fewshot import FewShotEvalCallback
from lightning_tts.callbacks.images import ValidationImagesCallback
from lightning_tts.config import save_config, to_container
from lightning_tts.data.datamodule import SpeakerTaskDataModule
from lightning_tts.errors import LightningTTSError
from lightning_tts.learners import get_learner, load_learner
from lightning_tts.learners.base import BaseLearner

log = logging.getLogger(__name__)
RUN_DIR_ENV = "LIGHTNING_TTS_RUN_DIR"  # shared with the processes Lightning launches for DDP


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


def resolve_run_dir(cfg: DictConfig) -> tuple[Path, Optional[str]]:
    """(run directory, checkpoint to resume from) for a config.

    ``ckpt_path=last`` resumes the newest run of this learner that has ``checkpoints/last.ckpt``;
    ``ckpt_path=FILE`` continues in that checkpoint's run directory.

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
        return (Path(cfg.run_dir) if cfg.run_dir else path.resolve().parent.parent), str(path)
    if cfg.run_dir:
        return Path(cfg.run_dir), None
    if os.environ.get(RUN_DIR_ENV) and os.environ.get("LOCAL_RANK", "0") != "0":  # a DDP child of this run
        return Path(os.environ[RUN_DIR_ENV]), None
    if os.environ.get("SLURM_JOB_ID"):
        return parent / f"slurm_{os.environ['SLURM_JOB_ID']}", None
    versions = _versions(parent)
    next_n = int(versions[-1].name.split("_")[-1]) + 1 if versions else 0
    return parent / f"version_{next_n}", None


def build_datamodule(cfg: DictConfig, mode: str, progress: bool = True) -> SpeakerTaskDataModule:
    """The shared data module for a learner's data mode, prepared and set up."""
    dm = SpeakerTaskDataModule(cfg.data, FeatureParams.from_config(cfg.features), phonemes=cfg.text.phonemes,
                               mode=mode, seed=cfg.seed, progress=progress)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def check_compatible(learner: BaseLearner, cfg: DictConfig) -> None:
    """Refuse a checkpoint whose features or symbols differ from the configuration's.

    Raises:
        LightningTTSError: naming the first differing feature parameter.
    """
    wanted = FeatureParams.from_config(cfg.features).to_dict()
    have = learner.feature_params.to_dict()
    diff = [k for k in wanted if wanted[k] != have[k]]
    if diff:
        k = diff[0]
        raise LightningTTSError(f"checkpoint was trained with features.{k}={have[k]} but the config has "
                                f"features.{k}={wanted[k]}: use the checkpoint's feature settings")


def build_trainer(cfg: DictConfig, run_dir: Path, learner: BaseLearner, progress: bool = True) -> pl.Trainer:
    """A Lightning Trainer from ``cfg.trainer`` with the run's loggers and callbacks (the best
    checkpoint is chosen on ``learner.checkpoint_monitor()``)."""
    from pytorch_lightning.callbacks import LearningRateMonitor
    from pytorch_lightning.loggers import CSVLogger

    loggers = [CSVLogger(save_dir=str(run_dir), name="logs", version="")]
    if importlib.util.find_spec("tensorboard") is not None:  # optional: pip install tensorboard
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False))
    monitor, mode = learner.checkpoint_monitor()
    checkpoints = RunCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="best-step{step}",
                                auto_insert_metric_name=False, monitor=monitor, mode=mode, save_last=True,
                                save_top_k=1)
    options = {k: v for k, v in to_container(cfg.trainer).items() if k != "default_root_dir"}
    options["enable_progress_bar"] = options.get("enable_progress_bar", True) and progress
    return pl.Trainer(**options, default_root_dir=str(run_dir), logger=loggers,
                      callbacks=[checkpoints, ValidationImagesCallback(run_dir / "images"),
                                 FewShotEvalCallback(run_dir / "fewshot", seed=cfg.data.splits.seed,
                                                     **to_container(cfg.fewshot)),
                                 EmbeddingProjectionCallback(run_dir / "embeddings", seed=cfg.seed,
                                                             **to_container(cfg.projection)),
                                 LearningRateMonitor(logging_interval="step")],
                      use_distributed_sampler=False, inference_mode=False, enable_model_summary=False)


def run(cfg: DictConfig, stage: str = "fit", checkpoint: Optional[str] = None, progress: bool = True,
        adapt_steps: Optional[int] = None) -> RunResult:
    """Train (``fit``), or score a checkpoint on validation (``validate``) or few-shot test tasks (``test``).

    Args:
        cfg: the resolved configuration.
        stage: ``fit``, ``validate`` or ``test``.
        checkpoint: the checkpoint to score (validate/test).
        progress: progress bars.
        adapt_steps: adaptation steps used by validate/test (default: the checkpoint's).
    """
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if stage == "fit":
        learner_cls = get_learner(cfg.learner.name)
        run_dir, resume = resolve_run_dir(cfg)
        os.environ[RUN_DIR_ENV] = str(run_dir)
        dm = build_datamodule(cfg, learner_cls.data_mode, progress)
        learner = learner_cls.from_config(cfg, speakers=dm.split.train, symbols=dm.text.symbols)
        if resume:
            check_compatible(load_learner(resume), cfg)
    else:
        if not checkpoint:
            raise LightningTTSError(f"{stage} needs --checkpoint CKPT")
        learner = load_learner(checkpoint)
        check_compatible(learner, cfg)
        if adapt_steps is not None:
            learner.adapt_steps = adapt_steps
        run_dir, resume = Path(checkpoint).resolve().parent.parent, None
        dm = build_datamodule(cfg, learner.data_mode, progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(cfg, run_dir, learner, progress)
    if trainer.is_global_zero:
        save_config(cfg, run_dir / ("config.yaml" if stage == "fit" else f"config_{stage}.yaml"))
        log.info("%s: %s", cfg.learner.name, dm.describe())
    try:
        if stage == "fit":
            trainer.fit(learner, datamodule=dm, ckpt_path=resume)
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
