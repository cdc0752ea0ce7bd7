"""Learners: one LightningModule per way of learning speakers; one module per learner.

``learner.name`` names a module of this package; that module registers its class with
``@register_learner``. Adding a learner = one file here + one YAML in ``conf/learner/``.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightning_tts.errors import ConfigError, LightningTTSError

if TYPE_CHECKING:
    from lightning_tts.learners.base import BaseLearner

LEARNERS: dict[str, type["BaseLearner"]] = {}
CHECKPOINT_FORMAT = 1  # bump with a migration in load_learner when checkpoint contents change
_NOT_LEARNERS = {"base"}


def register_learner(cls: type["BaseLearner"]) -> type["BaseLearner"]:
    """Class decorator: make ``cls`` available as ``learner.name=<cls.name>``."""
    LEARNERS[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of the learner modules in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_LEARNERS)


def get_learner(name: str) -> type["BaseLearner"]:
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


def load_learner(path: str | Path) -> "BaseLearner":
    """A trained learner from a checkpoint (``torch.load(weights_only=True)``; no pickled code runs).

    Raises:
        LightningTTSError: the file is missing, truncated, or not a lightning_tts checkpoint.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise LightningTTSError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle refused by weights_only, not a torch file
        raise LightningTTSError(f"cannot load checkpoint {path}: {str(err).strip().splitlines()[0]}") from err
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or "learner_name" not in hparams:
        raise LightningTTSError(f"{path} is not a lightning_tts checkpoint (no learner hyper-parameters)")
    version = ckpt.get("lightning_tts_format", 0)
    if version > CHECKPOINT_FORMAT:
        raise LightningTTSError(f"{path} has checkpoint format {version}; this lightning_tts reads up to "
                                f"{CHECKPOINT_FORMAT}: upgrade lightning_tts")
    cls = get_learner(hparams["learner_name"])
    kwargs = {k: v for k, v in hparams.items() if k != "learner_name"}
    learner = cls(**kwargs)
    missing, unexpected = learner.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise LightningTTSError(f"{path} does not match this version's {cls.name} model "
                                f"(missing {len(missing)} tensors, e.g. {missing[:2]}; unexpected {len(unexpected)}, "
                                f"e.g. {unexpected[:2]})")
    learner.eval()
    return learner
