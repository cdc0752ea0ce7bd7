"""Config contract: defaults, merge order, schema errors with one line and exit code 2."""
from pathlib import Path

import pytest

from lightning_tts.cli import main
from lightning_tts.config import load_config
from lightning_tts.errors import ConfigError
from lightning_tts.paths import CONF_DIR


def test_defaults_and_merge_order(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("data:\n  batch_size: 7\n  tasks:\n    shots: 3\n")
    cfg = load_config([extra], ["data.tasks.shots=2"])
    assert cfg.features.sample_rate == 16000 and cfg.features.n_mels == 80
    assert cfg.data.batch_size == 7  # from the file
    assert cfg.data.tasks.shots == 2  # the override wins over the file


def test_project_relative_config_files() -> None:
    cfg = load_config(["conf/data/vctk.yaml"], ["data.root=/somewhere"])
    assert cfg.data.corpus == "vctk" and cfg.data.root == "/somewhere"


@pytest.mark.parametrize("override, needle", [
    ("data.rot=x", "unknown config key 'data.rot'"),
    ("trainer.max_steps=abc", "trainer.max_steps"),
    ("features.n_mels=[1,2]", "features.n_mels"),
    ("nonsense", "not of the form"),
])
def test_bad_overrides_raise_one_line(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config([], [override])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unknown_key_suggests_close_names() -> None:
    with pytest.raises(ConfigError, match=r"did you mean: data\.root"):
        load_config([], ["data.rot=x"])


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([tmp_path / "missing.yaml"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse config file"):
        load_config([broken])
    typo = tmp_path / "typo.yaml"
    typo.write_text("trainer:\n  max_stepz: 3\n")
    with pytest.raises(ConfigError, match=rf"unknown config key 'trainer.max_stepz' in {typo}"):
        load_config([typo])


def test_cli_exit_codes_and_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preprocess", "data.rot=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key 'data.rot'") and err.count("\n") == 1
    assert main(["preprocess", "--print-config", "data.tasks.shots=9"]) == 0
    assert "shots: 9" in capsys.readouterr().out


def test_real_corpus_preset_requires_root(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preprocess", "--config", "conf/data/vctk.yaml"]) == 2
    assert "data.root is required" in capsys.readouterr().err


def _leaves(node: object, prefix: str = "") -> dict[str, object]:
    """Dotted key -> value of every leaf of a plain mapping."""
    if not isinstance(node, dict) or not node:
        return {prefix: node} if prefix else {}
    out: dict[str, object] = {}
    for key, value in node.items():
        out.update(_leaves(value, f"{prefix}{key}." if isinstance(value, dict) and value else f"{prefix}{key}"))
    return out


def _baseline(preset: Path) -> dict[str, object]:
    """What ``preset``'s values are compared against: the schema defaults for conf/default.yaml;
    for any other preset, the config it is merged over (default.yaml, with the learner section
    started afresh when the preset names another learner)."""
    from omegaconf import OmegaConf

    from lightning_tts.config import DEFAULT_CONFIG, Config
    from lightning_tts.learners import learner_options
    from lightning_tts.schema import to_container

    own = OmegaConf.to_container(OmegaConf.load(preset))
    if preset.parent.name == "experiment":  # an experiment file, schema ExperimentConfig
        from lightning_tts.experiment import ExperimentConfig

        return _leaves(to_container(OmegaConf.structured(ExperimentConfig)))
    if preset == DEFAULT_CONFIG:
        base = to_container(OmegaConf.structured(Config))
        learner = own.get("learner", {}).get("name", base["learner"]["name"])
    else:
        base = to_container(load_config())
        learner = own.get("learner", {}).get("name", base["learner"]["name"])
        if learner == base["learner"]["name"]:
            return _leaves(base)
    base["learner"] = to_container(learner_options({"name": learner}))
    return _leaves(base)


PRESETS = sorted(CONF_DIR.glob("**/*.yaml"))
SELECTORS = {"learner.name", "data.corpus"}  # a preset names its choice even when it is the default
# presets that name a default on purpose, so that stacked after another preset they undo it
RESETS = {"tiny.yaml": ("model.",), "cpu.yaml": ("trainer.precision",)}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_presets_hold_only_what_differs_from_the_defaults(preset: Path) -> None:
    """One home per default: the dataclass next to the class it configures. A preset that restates
    a value it would get anyway is a second home, which goes stale when the default changes."""
    from omegaconf import OmegaConf

    baseline = _baseline(preset)
    own = _leaves(OmegaConf.to_container(OmegaConf.load(preset)))
    resets = RESETS.get(preset.name, ())
    restated = {k: v for k, v in own.items() if k not in SELECTORS and k in baseline and baseline[k] == v
                and not k.startswith(resets)}
    assert not restated, f"{preset.name} restates values it gets anyway: {restated}"
