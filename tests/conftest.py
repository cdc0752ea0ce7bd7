"""Fixtures: tiny corpora written in the exact real layouts, and a small synthetic corpus."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

from lightning_tts.config import load_config

#: The training seed (``seed=``) of the tests that assert that something learns. Their thresholds
#: were set from several seeds, each test stating the values measured:
#: ``LIGHTNING_TTS_TEST_SEED=N python -m pytest -m slow tests/test_metric.py -s`` prints them for seed N
#: (most of them train for minutes and are marked ``slow``).
TEST_SEED = int(os.environ.get("LIGHTNING_TTS_TEST_SEED", "1234"))

SENTENCES = ["Please call Stella.", "Ask her to bring these things.", "Six spoons of fresh snow peas.",
             "We also need a small plastic snake.", "The rainbow is a division of white light.",
             "She can scoop these things into three red bags."]


def tone(seconds: float = 0.8, sample_rate: int = 16000, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a little noise: cheap stand-in audio for reader tests."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    return (0.3 * wave / 2.3 + 0.01 * np.random.default_rng(seed).normal(size=t.size)).astype(np.float32)


def write_vctk(root: Path, speakers: int = 3, utts: int = 4, version: str = "0.92", sample_rate: int = 48000) -> Path:
    """VCTK 0.92 (``wav48_silence_trimmed/p225/p225_001_mic{1,2}.flac``) or 0.80 (``wav48/p225/*.wav``)."""
    info = ["ID  AGE  GENDER  ACCENTS  REGION  COMMENTS"]
    for s in range(speakers):
        spk = f"p{225 + s}"
        info.append(f"{spk if version == '0.92' else spk[1:]}  23  {'FM'[s % 2]}    English    Southern")
        (root / "txt" / spk).mkdir(parents=True, exist_ok=True)
        for u in range(1, utts + 1):
            utt = f"{spk}_{u:03d}"
            (root / "txt" / spk / f"{utt}.txt").write_text(SENTENCES[u % len(SENTENCES)] + "\n")
            audio = tone(0.6 + 0.1 * u, sample_rate, 110 + 30 * s, seed=u)
            if version == "0.92":
                d = root / "wav48_silence_trimmed" / spk
                d.mkdir(parents=True, exist_ok=True)
                for mic in ("mic1", "mic2"):
                    sf.write(d / f"{utt}_{mic}.flac", audio, sample_rate)
            else:
                d = root / "wav48" / spk
                d.mkdir(parents=True, exist_ok=True)
                sf.write(d / f"{utt}.wav", audio, sample_rate)
    (root / "speaker-info.txt").write_text("\n".join(info) + "\n")
    return root


def write_libritts(root: Path, subsets: tuple[str, ...] = ("train-clean-100", "train-clean-360"),
                   speakers: int = 2, utts: int = 3, sample_rate: int = 24000) -> Path:
    """LibriTTS: ``<subset>/<spk>/<chapter>/<spk>_<chapter>_<utt>_<seg>.wav`` + ``.normalized.txt``."""
    lines = [";ID  |SEX| SUBSET           |NAME"]
    for k, subset in enumerate(subsets):
        for s in range(speakers):
            spk, chapter = str(19 + 100 * k + s), str(198 + s)
            lines.append(f"{spk}   | {'FM'[s % 2]} | {subset} | Reader {spk}")
            d = root / subset / spk / chapter
            d.mkdir(parents=True, exist_ok=True)
            for u in range(utts):
                stem = f"{spk}_{chapter}_{u:06d}_{u:06d}"
                sf.write(d / f"{stem}.wav", tone(0.7, sample_rate, 100 + 20 * s, seed=u), sample_rate)
                (d / f"{stem}.normalized.txt").write_text(SENTENCES[u % len(SENTENCES)])
                (d / f"{stem}.original.txt").write_text(SENTENCES[u % len(SENTENCES)])
    (root / "SPEAKERS.txt").write_text("\n".join(lines) + "\n")
    return root


def write_ljspeech(root: Path, utts: int = 4, sample_rate: int = 22050) -> Path:
    """LJSpeech 1.1: ``metadata.csv`` (id|text|normalized) + ``wavs/<id>.wav``."""
    (root / "wavs").mkdir(parents=True, exist_ok=True)
    rows = []
    for u in range(1, utts + 1):
        uid = f"LJ001-{u:04d}"
        sf.write(root / "wavs" / f"{uid}.wav", tone(0.8, sample_rate, 200, seed=u), sample_rate)
        rows.append(f"{uid}|{SENTENCES[u % len(SENTENCES)]}|{SENTENCES[u % len(SENTENCES)]}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def write_manifest(root: Path, fmt: str = "csv", speakers: int = 2, utts: int = 3) -> Path:
    """A manifest (CSV or JSONL) with relative audio paths."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(speakers):
        for u in range(utts):
            rel = f"audio/spk{s}_{u}.wav"
            sf.write(root / rel, tone(0.7, 16000, 120 + 40 * s, seed=u), 16000)
            rows.append({"audio": rel, "text": SENTENCES[u], "speaker": f"spk{s}"})
    path = root / f"manifest.{fmt}"
    if fmt == "csv":
        path.write_text("audio,text,speaker\n" + "".join(f'{r["audio"]},"{r["text"]}",{r["speaker"]}\n' for r in rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic corpus (10 speakers x 14 utterances), built once per test session."""
    from lightning_tts.data.synthetic import build_synthetic_corpus

    root = tmp_path_factory.mktemp("synthetic") / "corpus"
    return build_synthetic_corpus(root, speakers=10, utterances=14, seed=3, workers=2, progress=False)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., object]:
    """``make_cfg(*overrides, files=())``: a config whose caches and runs live in tmp_path."""

    def make(*overrides: str, files: tuple[str, ...] = ()) -> object:
        base = [f"data.cache_dir={tmp_path / 'cache'}", f"trainer.default_root_dir={tmp_path / 'runs'}",
                "data.preprocess_workers=1"]
        return load_config(list(files), base + list(overrides))

    return make


# Learner options that only make a learner's test runs faster (sizes, not behaviour); a learner
# without an entry runs with its defaults.
FAST_OPTIONS: dict[str, tuple[str, ...]] = {
    "maml": ("learner.inner_steps=2", "learner.adapt_steps=2"),
    "metric": ("learner.encoder.channels=32", "projection.method=pca"),
    "mann": ("learner.memory.slots=16",),
}


#: MAML started from the memory read of the support set: the embedded-default preset's form
MAML_MEMORY_START = ("learner.speaker_start=memory", "learner.inner_lr_shape=element")


def small_learner_overrides(name: str) -> tuple[str, ...]:
    """``learner.name=<name>`` with small batches of the learner's own batch plan, for tests that run
    every registered learner (discovered from the registry, so a new learner is tested too)."""
    from lightning_tts.data.plans import SpeakerBatches, TaskBatches, UtteranceBatches
    from lightning_tts.learners import get_learner

    small = {TaskBatches: ("data.tasks.tasks_per_batch=2", "data.tasks.shots=3", "data.tasks.queries=3"),
             SpeakerBatches: ("data.speakers_per_batch=3", "data.utterances_per_speaker=3"),
             UtteranceBatches: ("data.batch_size=4",)}
    return (f"learner.name={name}", *small[type(get_learner(name).batches)], *FAST_OPTIONS.get(name, ()))


def execute_notebook(name: str, env: dict[str, str]) -> list[dict]:
    """Run ``notebooks/<name>`` from the project root with ``env`` set (nbclient); return every code cell's outputs."""
    import os

    import nbformat
    from nbclient import NotebookClient

    root = Path(__file__).resolve().parents[1]
    notebook = nbformat.read(root / "notebooks" / name, as_version=4)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(root)}}).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
