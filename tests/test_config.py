"""Config contract: defaults, merge order, schema errors with one line and exit code 2."""
from pathlib import Path

import pytest

from lightning_tts.cli import main
from lightning_tts.config import load_config
from lightning_tts.errors import ConfigError


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
