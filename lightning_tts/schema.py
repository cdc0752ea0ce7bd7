"""Config dataclasses <-> plain containers.

Every section of the run configuration is a dataclass that lives next to the class it configures
(``ModelConfig`` in ``models/acoustic.py``, ``FewShotConfig`` in ``callbacks/fewshot.py``, ...) and
is that class's argument; ``config.py`` only composes them. Checkpoints store sections as plain
containers (``torch.load(weights_only=True)`` refuses dataclasses), and ``build`` turns them back.

Example::

    model = AcousticModel(build(ModelConfig, {"dim": 64}), n_symbols=80, n_mels=80)
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Optional, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightning_tts.atomic import write_text
from lightning_tts.errors import ConfigError
from lightning_tts.provenance import provenance_header

T = TypeVar("T")


def build(cls: type[T], values: Optional[Mapping[str, Any] | T] = None, section: str = "") -> T:
    """An instance of the dataclass ``cls`` (nested dataclasses included) from plain containers.

    Args:
        cls: the config dataclass.
        values: a (partial) mapping of its fields, an instance (returned as is), or None (defaults).
        section: the section's dotted name, for error messages.

    Raises:
        ConfigError: an unknown key or a value of the wrong type, naming the key.
    """
    if isinstance(values, cls):
        return values
    schema = OmegaConf.structured(cls)
    try:
        merged = OmegaConf.merge(schema, dict(values or {}))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = ".".join(p for p in (section, str(getattr(err, "full_key", "") or "")) if p)
        raise ConfigError(f"bad config key '{key}' for {cls.__name__}: {str(err).splitlines()[0]}") from err


def to_container(node: Any) -> Any:
    """A config node or dataclass as plain Python containers (safe to store in checkpoints)."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return dataclasses.asdict(node)
    return node


def to_yaml(cfg: DictConfig) -> str:
    """The resolved configuration as YAML text."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved configuration to ``path`` atomically, headed by comment lines saying what
    wrote it (``provenance``)."""
    write_text(path, provenance_header() + to_yaml(cfg))
