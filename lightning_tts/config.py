"""The run configuration: every section's dataclass composed into one schema, and its loader.

A run's configuration is ``conf/default.yaml`` merged, left to right, with every ``--config FILE``
and then with the dotted ``key=value`` overrides. The merge is checked against the typed schema
below: an unknown key or a value of the wrong type fails with one line that names the key (and the
closest valid names), exit code 2. Each section's dataclass lives next to the class it configures
and holds that section's defaults; this module only composes them. The YAML presets hold only what
differs from those defaults.

Example::

    cfg = load_config(["conf/data/vctk.yaml"], ["data.root=/data/VCTK-Corpus-0.92"])
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    GrammarParseError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from lightning_tts.audio import FeatureParams
from lightning_tts.callbacks.embeddings import ProjectionConfig
from lightning_tts.callbacks.fewshot import FewShotConfig
from lightning_tts.data.datamodule import DataConfig
from lightning_tts.errors import ConfigError
from lightning_tts.learners import WarmStartConfig, learner_options
from lightning_tts.learners.base import OptimConfig
from lightning_tts.models.acoustic import ModelConfig
from lightning_tts.models.losses import LossConfig
from lightning_tts.models.vocoder import VocoderConfig
from lightning_tts.paths import DEFAULT_CONFIG, resolve_path
from lightning_tts.text import TextConfig
from lightning_tts.training import TrainerConfig


@dataclass
class Config:
    """The whole run.

    ``learner`` holds ``name`` (a module of ``lightning_tts.learners``) and that learner's own options,
    checked against its ``Config`` dataclass. A config file that names another learner replaces the
    section instead of merging into it.

    Attributes:
        run_dir: the run directory (default: the next ``version_N``).
        ckpt_path: resume ``fit`` from this checkpoint, or ``last``.
        init_from: a fresh ``fit`` starts from this checkpoint's weights, of any learner (a warm
            start; see ``WarmStartConfig``, the ``warm_start`` section). Ignored when resuming.
        init_from_sha256: the SHA-256 that ``init_from`` must have; ``fit`` writes it into the run's
            ``config.yaml``, so rerunning that config refuses a changed file.
    """

    seed: int = 1234
    features: FeatureParams = field(default_factory=FeatureParams)
    text: TextConfig = field(default_factory=TextConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    learner: Any = field(default_factory=lambda: {"name": "multispeaker"})
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    run_dir: Optional[str] = None
    ckpt_path: Optional[str] = None
    init_from: Optional[str] = None
    init_from_sha256: Optional[str] = None


def _valid_keys(node: Any, prefix: str = "") -> list[str]:
    """All dotted keys of a config node, for "did you mean" suggestions."""
    keys: list[str] = []
    if isinstance(node, DictConfig):
        for name in node.keys():
            dotted = f"{prefix}{name}"
            keys.append(dotted)
            keys.extend(_valid_keys(node._get_node(name), f"{dotted}."))
    return keys


def _explain(err: OmegaConfBaseException, schema: DictConfig, source: str) -> ConfigError:
    """Turn an OmegaConf error into a one-line ConfigError naming the key and the source."""
    key = getattr(err, "full_key", None) or ""
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)):
        close = difflib.get_close_matches(key, _valid_keys(schema), n=3, cutoff=0.6)
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        return ConfigError(f"unknown config key '{key}' in {source}{hint}")
    if isinstance(err, ValidationError):
        msg = str(err).splitlines()[0]
        return ConfigError(f"bad value for config key '{key}' in {source}: {msg}")
    return ConfigError(f"invalid configuration in {source}: {str(err).splitlines()[0]}")


def _read_yaml(path: Path) -> DictConfig:
    """Read one YAML config file, with errors naming the file."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and OmegaConf grammar errors share no base class
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"cannot parse config file {path}: {first}") from err
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config file {path} must hold a mapping at top level")
    return loaded


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """Parse ``key=value`` overrides; values use YAML syntax (``[a,b]``, ``null``, numbers)."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}' is not of the form dotted.key=value")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except (GrammarParseError, OmegaConfBaseException) as err:
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {str(err).splitlines()[0]}") from err


def read_sources(config_files: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> list[tuple[str, DictConfig]]:
    """(source name, node) of each YAML file (a relative path that does not exist from the working
    directory is looked up among the package's presets) and, last, of the ``key=value`` overrides.

    Raises:
        ConfigError: an unreadable file or a malformed override.
    """
    sources = [(str(p), _read_yaml(resolve_path(p))) for p in config_files]
    sources.append(("the command-line overrides", _parse_overrides(overrides)))
    return sources


def merge_checked(schema: DictConfig, sources: Sequence[tuple[str, DictConfig]],
                  before_merge: Optional[Callable[[DictConfig, DictConfig], None]] = None) -> DictConfig:
    """Merge ``sources`` left to right over a structured ``schema``, then resolve interpolations.

    Args:
        schema: ``OmegaConf.structured(SomeDataclass)``.
        sources: ``read_sources`` output (plus any defaults first).
        before_merge: called with (merged so far, next node) before each merge.

    Raises:
        ConfigError: unknown key, wrong type or a missing required value, naming the key and source.
    """
    cfg = schema
    for source, node in sources:
        if before_merge is not None:
            before_merge(cfg, node)
        try:
            cfg = OmegaConf.merge(cfg, node)
        except OmegaConfBaseException as err:
            raise _explain(err, schema, source) from err
        except TypeError as err:  # OmegaConf: a mapping merged into a list or the reverse
            key = _shape_mismatch(cfg, node) or "?"
            raise ConfigError(f"{key} in {source}: its value does not have the shape of the key's ({err}); "
                              f"a list is set whole, e.g. {key}=[...]") from err
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"required config value missing: {', '.join(missing)} (set it as {missing[0]}=...)")
    try:
        OmegaConf.resolve(cfg)
    except (MissingMandatoryValue, OmegaConfBaseException) as err:
        raise ConfigError(f"cannot resolve config: {str(err).splitlines()[0]}") from err
    return cfg


def _shape_mismatch(cfg: Any, node: Any, prefix: str = "") -> Optional[str]:
    """The first dotted key where ``node`` has a mapping and ``cfg`` a list, or the reverse (None: none)."""
    for key in node if isinstance(cfg, DictConfig) and isinstance(node, DictConfig) else ():
        if key not in cfg:
            continue
        here, there = cfg._get_node(key), node._get_node(key)
        if (OmegaConf.is_list(here) and OmegaConf.is_dict(there)) or (OmegaConf.is_dict(here) and OmegaConf.is_list(there)):
            return f"{prefix}{key}"
        found = _shape_mismatch(here, there, f"{prefix}{key}.")
        if found:
            return found
    return None


def load_config(config_files: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> DictConfig:
    """Build the run configuration.

    Args:
        config_files: YAML files merged left to right over ``conf/default.yaml``. A relative path
            that does not exist from the working directory is looked up among the package's presets
            (so ``conf/learner/maml.yaml`` works from anywhere).
        overrides: ``dotted.key=value`` strings applied last.

    Returns:
        The merged, schema-checked configuration; every required value present.

    Raises:
        ConfigError: unknown key, wrong type, unreadable file or a missing required value.
    """
    schema = OmegaConf.structured(Config)
    OmegaConf.set_readonly(schema.features, False)  # FeatureParams is frozen (hashable); its node is not
    sources = [(str(DEFAULT_CONFIG), _read_yaml(DEFAULT_CONFIG)), *read_sources(config_files, overrides)]
    cfg = merge_checked(schema, sources, _select_learner)
    cfg.learner = learner_options(cfg.learner)
    return cfg


def _select_learner(cfg: DictConfig, node: DictConfig) -> None:
    """A source that names a different learner starts that section afresh (no cross-learner merge)."""
    learner = node.get("learner") if isinstance(node, DictConfig) else None
    if isinstance(learner, DictConfig) and "name" in learner and learner.name != cfg.learner.get("name"):
        cfg.learner = {"name": learner.name}
