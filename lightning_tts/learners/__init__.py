"""Learners: one LightningModule per way of learning speakers; one module per learner.

``learner.name`` names a module of this package; that module registers its class with
``@register_learner``. Adding a learner = one file here + one YAML in ``conf/learner/``.
This module is the registry: finding, building and loading learners (with checkpoint migration).
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

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


def load_learner(path: str | Path) -> BaseLearner:
    """A trained learner from a checkpoint (``torch.load(weights_only=True)``; no pickled code runs),
    from any checkpoint format this version knows (``migrate_hyperparameters``).

    Raises:
        LightningTTSError: the file is missing, truncated, or not a lightning_tts checkpoint.
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
    cls = get_learner(_learner_name(hparams))
    learner = cls(**migrate_hyperparameters(hparams, version))
    missing, unexpected = learner.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise LightningTTSError(f"{path} does not match this version's {cls.name} model "
                                f"(missing {len(missing)} tensors, e.g. {missing[:2]}; unexpected {len(unexpected)}, "
                                f"e.g. {unexpected[:2]})")
    learner.eval()
    return learner
