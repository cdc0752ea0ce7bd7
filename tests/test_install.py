"""The package installs without its source tree: a built wheel, installed into a fresh virtual
environment, finds its presets and split lists from any working directory."""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(venv python, an unrelated working directory): the wheel built offline from this checkout,
    installed with --no-deps into a fresh venv that sees this environment's packages (torch & co.)
    through a path file, but not its .pth hooks (so not this checkout's editable install)."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"  # a copy: building writes build/ and egg-info into the source tree
    shutil.copytree(REPO / "lightning_tts", source / "lightning_tts", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                  str(tmp / "wheels"), str(source)], cwd=tmp)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp / "wheels").glob("lightning_tts-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "lightning_tts/conf/default.yaml" in names and "lightning_tts/data/splits/vctk.yaml" in names
    venv = tmp / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp).returncode == 0
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp)
    (Path(purelib.stdout.strip()) / "outer_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    done = _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return python, elsewhere


def _env() -> dict[str, str]:
    """This environment without PYTHONPATH (the checkout must not leak into the installed run)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_installed_package_is_the_wheel_not_the_checkout(installed) -> None:
    python, elsewhere = installed
    where = _run([str(python), "-c", "import lightning_tts; print(lightning_tts.__file__)"], elsewhere, _env())
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(python.parents[1]), where.stdout


def test_installed_cli_runs_and_reads_its_presets_from_anywhere(installed) -> None:
    python, elsewhere = installed
    helped = _run([str(python), "-m", "lightning_tts", "--help"], elsewhere, _env())
    assert helped.returncode == 0 and "synthesize" in helped.stdout, helped.stderr
    shown = _run([str(python), "-m", "lightning_tts", "preprocess", "--print-config", "--config",
                  "conf/learner/mann.yaml", "--config", "conf/data/vctk.yaml", "data.root=/corpus"], elsewhere, _env())
    assert shown.returncode == 0, shown.stderr
    assert "name: mann" in shown.stdout and "file: data/splits/vctk.yaml" in shown.stdout
    assert "max_steps: 1500" in shown.stdout  # from the installed conf/learner/mann.yaml


def test_a_users_own_file_wins_over_the_installed_preset(installed) -> None:
    python, elsewhere = installed
    (elsewhere / "conf" / "learner").mkdir(parents=True)
    (elsewhere / "conf" / "learner" / "mann.yaml").write_text("learner:\n  name: mann\ntrainer:\n  max_steps: 9\n")
    shown = _run([str(python), "-m", "lightning_tts", "preprocess", "--print-config", "--config",
                  "conf/learner/mann.yaml"], elsewhere, _env())
    assert shown.returncode == 0 and "max_steps: 9" in shown.stdout, shown.stderr
