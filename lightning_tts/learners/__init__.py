"""Learners: one LightningModule per way of learning speakers; one module per learner.

``learner.name`` names a module of this package; that module registers its class with
``@register_learner``. Adding a learner = one file here + one YAML in ``conf/learner/``.
This module is the registry: finding, building and loading learners (with checkpoint migration),
and warm-starting a new learner from another run's checkpoint (``warm_start``, ``init_from=CKPT``).
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightning_tts.atomic import file_sha256
from lightning_tts.errors import ConfigError, LightningTTSError
from lightning_tts.learners.base import CHECKPOINT_FORMAT, BaseLearner
from lightning_tts.schema import to_container

LEARNERS: dict[str, type[BaseLearner]] = {}
_NOT_LEARNERS = {"base", "capabilities"}
# hyper-parameters of format-1 checkpoints that were not learner options
_FORMAT1_SECTIONS = ("symbols", "features", "speakers", "model", "loss", "optim", "phonemes")


def register_learner(cls: type[BaseLearner]) -> type[BaseLearner]:
    """Class decorator: make ``cls`` available as ``learner.name=<cls.name>``."""
    LEARNERS[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of the learner modules in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_LEARNERS)


def get_learner(name: str) -> type[BaseLearner]:
    """The learner class registered as ``name``.

    Raises:
        ConfigError: no such learner (with the close names).
    """
    if name not in available():
        close = difflib.get_close_matches(str(name), available(), n=2)
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown learner.name {name!r}{hint}; available: {', '.join(available())}")
    importlib.import_module(f"{__name__}.{name}")
    return LEARNERS[name]


def learner_options(node: Any) -> DictConfig:
    """The ``learner`` section checked against, and completed from, the learner's ``Config`` dataclass."""
    if not isinstance(node, (dict, DictConfig)) or "name" not in node:
        raise ConfigError("config section 'learner' must be a mapping with a 'name'")
    cls = get_learner(node["name"])
    schema = OmegaConf.structured(cls.Config)
    try:
        return OmegaConf.merge(schema, node)
    except OmegaConfBaseException as err:
        key = f"learner.{getattr(err, 'full_key', '')}"
        close = difflib.get_close_matches(key, [f"learner.{k}" for k in schema.keys()], n=2)
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        raise ConfigError(f"bad config key '{key}' for learner {cls.name}: {str(err).splitlines()[0]}{hint}") from err


def build_learner(cfg: DictConfig, speakers: list[str], symbols: list[str]) -> BaseLearner:
    """A new learner of ``cfg.learner.name`` from a run configuration and the data module's speaker
    table and symbols."""
    cls = get_learner(cfg.learner.name)
    return cls(symbols=symbols, speakers=speakers, features=to_container(cfg.features),
               model=to_container(cfg.model), loss=to_container(cfg.loss), optim=to_container(cfg.optim),
               learner=to_container(cfg.learner), phonemes=cfg.text.phonemes)


def migrate_hyperparameters(hparams: dict[str, Any], version: int) -> dict[str, Any]:
    """The constructor arguments of a stored checkpoint's hyper-parameters, in today's format.

    Format 1 kept each learner option as a top-level argument beside ``learner_name`` (the name);
    format 2 keeps them, with ``name``, in one ``learner`` section. Options stored as None took the
    constructor's default then and take the ``Config`` dataclass default now.
    """
    if version >= 2:
        return dict(hparams)
    options = {k: v for k, v in hparams.items() if k not in (*_FORMAT1_SECTIONS, "learner_name") and v is not None}
    sections = {k: hparams[k] for k in _FORMAT1_SECTIONS if k in hparams}
    return {**sections, "learner": {"name": hparams["learner_name"], **options}}


def _learner_name(hparams: Any) -> Any:
    """The learner name stored in a checkpoint's hyper-parameters (any format), or None."""
    if not isinstance(hparams, dict):
        return None
    learner = hparams.get("learner")
    return learner.get("name") if isinstance(learner, dict) else hparams.get("learner_name")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The contents of a lightning_tts checkpoint (``torch.load(weights_only=True)``; no pickled code
    runs) that this version can read.

    Raises:
        LightningTTSError: the file is missing, truncated, not a lightning_tts checkpoint, or newer.
    """
    path = Path(path)
    if not path.is_file():
        raise LightningTTSError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle refused by weights_only, not a torch file
        raise LightningTTSError(f"cannot load checkpoint {path}: {str(err).strip().splitlines()[0]}") from err
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if _learner_name(hparams) is None:
        raise LightningTTSError(f"{path} is not a lightning_tts checkpoint (no learner hyper-parameters)")
    version = ckpt.get("lightning_tts_format", 0)
    if version > CHECKPOINT_FORMAT:
        raise LightningTTSError(f"{path} has checkpoint format {version}; this lightning_tts reads up to "
                                f"{CHECKPOINT_FORMAT}: upgrade lightning_tts")
    return ckpt


def learner_from_checkpoint(ckpt: dict[str, Any], path: str | Path) -> BaseLearner:
    """The learner of a checkpoint's contents (``read_checkpoint``), migrated from any format this
    version knows (``migrate_hyperparameters``), in eval mode, with its warm-start record and its
    ``training_cost`` (None for checkpoints written before it was recorded).

    Raises:
        LightningTTSError: the weights do not fit this version's learner (``path`` names the file).
    """
    hparams = ckpt["hyper_parameters"]
    cls = get_learner(_learner_name(hparams))
    learner = cls(**migrate_hyperparameters(hparams, ckpt.get("lightning_tts_format", 0)))
    missing, unexpected = learner.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise LightningTTSError(f"{path} does not match this version's {cls.name} model "
                                f"(missing {len(missing)} tensors, e.g. {missing[:2]}; unexpected {len(unexpected)}, "
                                f"e.g. {unexpected[:2]})")
    learner.restore_warm_start(ckpt.get("warm_start"))
    learner.training_cost = ckpt.get("training_cost")
    learner.eval()
    return learner


def load_learner(path: str | Path) -> BaseLearner:
    """A trained learner from a checkpoint (``torch.load(weights_only=True)``; no pickled code runs),
    from any checkpoint format this version knows (``migrate_hyperparameters``).

    Raises:
        LightningTTSError: the file is missing, truncated, or not a lightning_tts checkpoint.
    """
    return learner_from_checkpoint(read_checkpoint(path), path)


@dataclass
class WarmStartConfig:
    """How ``init_from=CKPT`` starts a fresh ``fit`` from another run's checkpoint (the ``warm_start``
    section; ``warm_start`` does it).

    The checkpoint may be of any learner (e.g. MAML from a multispeaker baseline). Copied: the whole
    acoustic model (same features, symbols and model sizes, else a one-line error naming the tensor
    and both shapes); the learner's ``warm_start_modules`` that the source has with the same shapes
    (e.g. a speaker encoder); MAML's learned initial speaker vector from the mean of the source's
    speaker table. The optimiser (Adam moments and step count) starts fresh: only weights are
    copied. Applied once, at the start of a fresh fit: ``ckpt_path=...`` (resuming) restores the
    run's own weights, schedule offset and frozen aligner, and ignores ``init_from``.

    Attributes:
        offset_schedules: (default on) the schedules that belong to the model, the binarisation
            loss's start and ramp (``loss.bin_start``, ``loss.bin_warmup``) and the learning-rate
            warm-up (``optim.warmup_steps``), continue from where the source left them: they count
            the source's step + this run's step (``BaseLearner.schedule_offset``, kept in this
            run's checkpoints). The cosine decay spans this run's own steps. Off: both restart at 0
            (so the fresh optimiser warms up again).
        freeze_aligner: (default off) keep the alignment module (``model.aligner``) at the source's
            weights: not trained by this run. An alternative to, or combined with, the offset.
    """

    offset_schedules: bool = True
    freeze_aligner: bool = False


def warm_start(learner: BaseLearner, path: str | Path, options: WarmStartConfig,
               sha256: Optional[str] = None) -> dict[str, Any]:
    """Initialise a new ``learner`` from another run's checkpoint (see ``WarmStartConfig``).

    Args:
        learner: a freshly built learner (before training).
        path: the source checkpoint (``init_from``).
        options: schedule offset and aligner freezing.
        sha256: the SHA-256 the file must have (``init_from_sha256``; None: any).

    Returns:
        The record, also kept as ``learner.warm_start_record`` and saved in the run's checkpoints as
        ``warm_start``: ``path`` (absolute), ``sha256``, ``source_learner``, ``source_global_step``
        (the source's optimiser steps), ``prior_steps`` (those plus its own warm start's
        ``prior_steps``: what a cost report adds to this run's steps), ``schedule_offset``,
        ``offset_schedules``, ``freeze_aligner`` and ``copied``.

    Raises:
        LightningTTSError: one line naming ``init_from``: a missing or unreadable file, another
            SHA-256, features or symbols that differ, or model tensors that do not fit.
    """
    origin = f"init_from {path}"
    if not Path(path).is_file():
        raise LightningTTSError(f"init_from not found: {path}")
    digest = file_sha256(path)
    if sha256 and digest != sha256:
        raise LightningTTSError(f"{origin}: its SHA-256 is {digest} but init_from_sha256={sha256}: the file "
                                f"changed; set init_from_sha256=null to use it as it is now")
    ckpt = read_checkpoint(path)
    source = learner_from_checkpoint(ckpt, path)
    if not source.synthesizes:
        raise LightningTTSError(f"{origin}: a speaker-encoder-only {source.name} checkpoint (learner.tts_weight=0) "
                                f"has no trained acoustic model: use learner.encoder_checkpoint instead")
    try:
        source.check_features(learner.feature_params)
    except LightningTTSError as err:
        raise LightningTTSError(f"{origin}: {err}") from err
    there, here = source.hparams["phonemes"], learner.hparams["phonemes"]
    if there != here:
        raise LightningTTSError(f"{origin}: it was trained with text.phonemes={there} and this run has "
                                f"text.phonemes={here}: use the source's text settings")
    if source.text.symbols != learner.text.symbols:
        raise LightningTTSError(f"{origin}: its symbol table ({len(source.text.symbols)} symbols) differs from this "
                                f"run's ({len(learner.text.symbols)}): use the source's text settings")
    copied = learner.warm_start_from(source, origin)
    step = int(ckpt.get("global_step", 0))
    before = ckpt.get("warm_start") or {}
    record = {"path": str(Path(path).resolve()), "sha256": digest, "source_learner": source.name,
              "source_global_step": step, "prior_steps": step + int(before.get("prior_steps", 0)),
              "schedule_offset": source.schedule_offset + step if options.offset_schedules else 0,
              "offset_schedules": options.offset_schedules, "freeze_aligner": options.freeze_aligner,
              "copied": copied}
    learner.restore_warm_start(record)
    return record
