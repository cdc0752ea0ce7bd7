"""The configuration schema and its loader.

A run's configuration is ``conf/default.yaml`` merged, left to right, with every ``--config FILE``
and then with the dotted ``key=value`` overrides. The merge is checked against the typed schema
below: an unknown key or a value of the wrong type fails with one line that names the key (and the
closest valid names), exit code 2. Each dataclass mirrors the arguments of the object it builds.

Example::

    cfg = load_config(["conf/data/vctk.yaml"], ["data.root=/data/VCTK-Corpus-0.92"])
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    GrammarParseError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from lightning_tts.atomic import write_text
from lightning_tts.audio import FeatureParams
from lightning_tts.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"
DEFAULT_CONFIG = CONF_DIR / "default.yaml"


@dataclass
class TextConfig:
    """Text front end: CMUdict ARPAbet phonemes with letter fallback, or letters only."""

    phonemes: bool = True


@dataclass
class SyntheticConfig:
    """The procedural corpus built at ``data.root`` when ``data.corpus=synthetic`` and it is missing."""

    speakers: int = 40
    utterances: int = 30
    seed: int = 0
    sample_rate: int = 16000


@dataclass
class SplitConfig:
    """Speaker-disjoint train/val/test splits: explicit lists, a split file, or counts."""

    val: int = 4
    test: int = 4
    val_speakers: List[str] = field(default_factory=list)
    test_speakers: List[str] = field(default_factory=list)
    file: Optional[str] = None
    seed: int = 0
    heldout_utterances: int = 2


@dataclass
class TaskConfig:
    """Few-shot task shape: K support and Q query utterances per speaker, T tasks per batch."""

    shots: int = 5
    queries: int = 5
    tasks_per_batch: int = 4
    tasks_per_epoch: int = 400
    val_tasks_per_speaker: int = 2


@dataclass
class DataConfig:
    """Where the corpus lives, how it is read, cached, split and batched."""

    corpus: str = "synthetic"
    root: Optional[str] = "artifacts/synthetic"
    cache_dir: str = "artifacts/cache"
    mic: str = "mic1"
    subsets: List[str] = field(default_factory=lambda: ["train-clean-100"])
    min_duration: float = 0.3
    max_duration: float = 20.0
    preprocess_workers: int = 2
    num_workers: int = 0
    batch_size: int = 16
    speakers_per_batch: int = 8
    utterances_per_speaker: int = 4
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)


@dataclass
class TrainerConfig:
    """Arguments of ``pytorch_lightning.Trainer``, one to one."""

    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    max_steps: int = -1
    max_epochs: Optional[int] = None
    val_check_interval: Any = None  # int: every N training batches; float: fraction of an epoch
    check_val_every_n_epoch: Optional[int] = 1
    log_every_n_steps: int = 10
    gradient_clip_val: Optional[float] = None
    accumulate_grad_batches: int = 1
    limit_train_batches: Any = None  # int: batches; float: fraction
    limit_val_batches: Any = None
    deterministic: bool = False
    enable_progress_bar: bool = True
    default_root_dir: str = "artifacts/runs"


@dataclass
class ModelConfig:
    """Arguments of ``models.acoustic.AcousticModel`` (sizes: see conf/model/*.yaml)."""

    dim: int = 128
    heads: int = 2
    encoder_layers: int = 2
    decoder_layers: int = 2
    ffn_dim: int = 256
    kernel_size: int = 3
    dropout: float = 0.1
    speaker_dim: int = 64
    predictor_channels: int = 128
    aligner_channels: int = 80
    aligner_temperature: float = 0.0005
    prior_scale: float = 1.0


@dataclass
class LossConfig:
    """Arguments of ``models.losses.AcousticLoss``."""

    duration_weight: float = 0.1
    align_weight: float = 1.0
    bin_weight: float = 1.0
    bin_start: int = 300
    bin_warmup: int = 300
    variance_weight: float = 0.1


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule of the (outer) training loop."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-6
    betas: List[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 100
    scheduler: str = "cosine"
    min_lr_ratio: float = 0.05


@dataclass
class FewShotConfig:
    """Arguments of ``callbacks.fewshot.FewShotEvalCallback`` (``every: 0`` turns it off)."""

    every: int = 1
    speakers: int = 2
    queries: int = 2
    shots: int = 5
    steps: int = 10
    griffin_lim_iters: int = 16
    speaker_encoder: Optional[str] = None  # evaluation encoder checkpoint (a metric run) for speaker_sim; also used by evaluate


@dataclass
class ProjectionConfig:
    """Arguments of ``callbacks.embeddings.EmbeddingProjectionCallback`` (learners with a speaker encoder)."""

    every: int = 1
    method: str = "umap"
    per_speaker: int = 10


@dataclass
class Config:
    """The whole run.

    ``learner`` holds ``name`` (a module of ``lightning_tts.learners``) and that learner's own options,
    checked against its ``Config`` dataclass. A config file that names another learner replaces the
    section instead of merging into it.
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
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    run_dir: Optional[str] = None
    ckpt_path: Optional[str] = None


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


def load_config(config_files: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> DictConfig:
    """Build the run configuration.

    Args:
        config_files: YAML files merged left to right over ``conf/default.yaml``. A relative path
            that does not exist from the working directory is looked up in the project root
            (so ``conf/learner/maml.yaml`` works from anywhere).
        overrides: ``dotted.key=value`` strings applied last.

    Returns:
        The merged, schema-checked configuration; every required value present.

    Raises:
        ConfigError: unknown key, wrong type, unreadable file or a missing required value.
    """
    schema = OmegaConf.structured(Config)
    OmegaConf.set_readonly(schema.features, False)  # FeatureParams is frozen (hashable); its node is not
    sources = [(str(DEFAULT_CONFIG), _read_yaml(DEFAULT_CONFIG))]
    sources += [(str(p), _read_yaml(resolve_path(p))) for p in config_files]
    sources.append(("the command-line overrides", _parse_overrides(overrides)))
    cfg = schema
    for source, node in sources:
        _select_learner(cfg, node)
        try:
            cfg = OmegaConf.merge(cfg, node)
        except OmegaConfBaseException as err:
            raise _explain(err, schema, source) from err
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"required config value missing: {', '.join(missing)} (set it as {missing[0]}=...)")
    try:
        OmegaConf.resolve(cfg)
    except (MissingMandatoryValue, OmegaConfBaseException) as err:
        raise ConfigError(f"cannot resolve config: {str(err).splitlines()[0]}") from err
    from lightning_tts.learners import learner_options

    cfg.learner = learner_options(cfg.learner)
    return cfg


def _select_learner(cfg: DictConfig, node: DictConfig) -> None:
    """A source that names a different learner starts that section afresh (no cross-learner merge)."""
    learner = node.get("learner") if isinstance(node, DictConfig) else None
    if isinstance(learner, DictConfig) and "name" in learner and learner.name != cfg.learner.get("name"):
        cfg.learner = {"name": learner.name}


def resolve_path(path: str | Path) -> Path:
    """A user-given relative path: from the working directory if it exists there, else the project root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    in_project = PROJECT_ROOT / p
    return in_project if in_project.exists() else p


def to_yaml(cfg: DictConfig) -> str:
    """The resolved configuration as YAML text."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved configuration to ``path`` atomically."""
    write_text(path, to_yaml(cfg))


def to_container(node: DictConfig | ListConfig) -> Any:
    """A config node as plain Python containers (safe to store in checkpoints)."""
    return OmegaConf.to_container(node, resolve=True)
