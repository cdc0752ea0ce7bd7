"""The eSpeak NG corpus: VCTK layout, determinism, shared and unique sentences, speakers that differ
measurably in F0, and its use as ``data.corpus=espeak``; the sentence grammar it speaks."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_tts.audio import FeatureParams, estimate_pitch, read_audio
from lightning_tts.cli import main
from lightning_tts.data.corpora import VCTKCorpus
from lightning_tts.data.espeak import ACCENTS, VARIANTS, EspeakConfig, EspeakVoice, build_espeak_corpus
from lightning_tts.data.sentences import TEMPLATES, make_sentence, vocabulary
from lightning_tts.errors import DataError
from lightning_tts.text import _cmudict

pytestmark = pytest.mark.skipif(importlib.util.find_spec("espeakng_loader") is None,
                                reason='the espeak extra is not installed (pip install "lightning_tts[espeak]")')
CONFIG = EspeakConfig(speakers=6, utterances=6, shared=2, seed=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_espeak_corpus(tmp_path_factory.mktemp("espeak") / "corpus", CONFIG, workers=2, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_vctk_092_and_readable(corpus: Path) -> None:
    index = VCTKCorpus(corpus).read()
    assert len(index.utterances) == 6 * 6 and len({u.speaker for u in index.utterances}) == 6
    assert all(u.path.endswith("_mic1.flac") and u.text for u in index.utterances)
    wav = read_audio(corpus / "wav48_silence_trimmed" / "e001" / "e001_001_mic1.flac", 22050)
    assert 1.0 < len(wav) / 22050 < 8.0 and float(wav.abs().max()) > 0.1
    info = VCTKCorpus(corpus).speaker_info()
    assert [info[f"e{i:03d}"]["gender"] for i in range(1, 7)] == ["M", "F"] * 3
    assert all(info[s]["accent"] in ACCENTS for s in info)
    voices = json.loads((corpus / "espeak-voices.json").read_text())["speakers"]
    assert len({(v["variant"], v["accent"], v["pitch"]) for v in voices}) == 6  # six distinct voices


def test_shared_sentences_are_shared_and_the_rest_unique(corpus: Path) -> None:
    texts = {p.stem: p.read_text().strip() for p in (corpus / "txt").rglob("*.txt")}
    for u in (1, 2):  # the `shared` first sentences: one text for every speaker
        assert len({texts[f"e{s:03d}_{u:03d}"] for s in range(1, 7)}) == 1
    own = [t for stem, t in texts.items() if int(stem.split("_")[1]) > 2]
    assert len(set(own)) == len(own) == 6 * 4


def test_build_is_deterministic_and_independent_of_workers(corpus: Path, tmp_path: Path) -> None:
    again = build_espeak_corpus(tmp_path / "again", CONFIG, workers=1, progress=False)
    assert _files(again) == _files(corpus)


def test_interrupted_build_is_completed_and_other_settings_refused(tmp_path: Path) -> None:
    root = build_espeak_corpus(tmp_path / "c", EspeakConfig(speakers=2, utterances=2, seed=1), workers=1, progress=False)
    victim = root / "wav48_silence_trimmed" / "e002" / "e002_002_mic1.flac"
    before = victim.read_bytes()
    victim.unlink()
    build_espeak_corpus(root, EspeakConfig(speakers=2, utterances=2, seed=1), workers=1, progress=False)
    assert victim.read_bytes() == before
    with pytest.raises(DataError, match="already holds an espeak corpus"):
        build_espeak_corpus(root, EspeakConfig(speakers=2, utterances=2, seed=2), workers=1, progress=False)


def test_speakers_differ_measurably_in_f0(corpus: Path) -> None:
    params = FeatureParams(sample_rate=22050)
    voices = {v["speaker"]: v for v in json.loads((corpus / "espeak-voices.json").read_text())["speakers"]}
    medians = {}
    for speaker in voices:
        f0 = torch.cat([estimate_pitch(read_audio(p, 22050), params)
                        for p in sorted((corpus / "wav48_silence_trimmed" / speaker).glob("*.flac"))])
        medians[speaker] = float(f0[f0 > 0].median())
    female = [medians[s] for s, v in voices.items() if v["gender"] == "F"]
    male = [medians[s] for s, v in voices.items() if v["gender"] == "M"]
    assert min(female) > max(male)  # every female voice speaks higher than every male voice
    # within a gender, the voice table's pitch setting orders the measured F0
    for gender in "FM":
        ranked = sorted((v["pitch"], medians[s]) for s, v in voices.items() if v["gender"] == gender)
        assert np.corrcoef([p for p, _ in ranked], [m for _, m in ranked])[0, 1] > 0.5, ranked


def test_voice_draws_cover_accents_and_variants() -> None:
    voices = [EspeakVoice.draw(i, seed=0) for i in range(40)]
    assert len({v.accent for v in voices}) == len(set(ACCENTS))
    assert len({v.variant for v in voices}) >= 25 and all(v.variant in VARIANTS[v.gender] for v in voices)
    assert voices == [EspeakVoice.draw(i, seed=0) for i in range(40)]


def test_data_corpus_espeak_builds_at_root_and_trains(tmp_path: Path) -> None:
    from lightning_tts.config import load_config
    from lightning_tts.training import run

    root = tmp_path / "espeak"
    cfg = load_config(["conf/data/espeak.yaml"], [
        f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}", f"trainer.default_root_dir={tmp_path / 'runs'}",
        "data.espeak.speakers=6", "data.espeak.utterances=8", "data.splits.val=1", "data.splits.test=1",
        "data.splits.file=null", "trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.val_check_interval=2",
        "trainer.enable_progress_bar=false", "fewshot.queries=1", "fewshot.steps=1", "fewshot.shots=2",
        "fewshot.speakers=1", "data.tasks.tasks_per_batch=1", "data.tasks.queries=2", "data.tasks.shots=2"])
    result = run(cfg, progress=False)
    assert (root / "espeak-voices.json").is_file() and result.last_checkpoint.is_file()
    assert 0.0 <= result.metrics["val/fewshot/wer"] and "val/fewshot/cer" in result.metrics


def test_cli_engine_espeak_and_its_one_line_errors(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    assert main(["synthetic-corpus", "--engine", "espeak", "--out", str(out), "--speakers", "2", "--utterances", "3",
                 "--shared", "1", "--workers", "1", "--no-progress"]) == 0
    assert len(list(out.rglob("*.flac"))) == 6 and "espeak corpus: 2 speakers x 3 utterances" in capsys.readouterr().out
    for args, message in ((["--shared", "4"], "--shared must be between 0 and --utterances (3)"),
                          (["--sample-rate", "16000"], "--sample-rate does not apply to --engine espeak")):
        code = main(["synthetic-corpus", "--engine", "espeak", "--out", str(tmp_path / "x"), "--utterances", "3",
                     *args, "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code != 0 and message in err and len(err.splitlines()) == 1, err


def test_missing_extra_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from lightning_tts.data.espeak import EspeakEngine

    real_import = builtins.__import__

    def no_espeak(name: str, *args, **kwargs):
        if name == "espeakng_loader":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(EspeakEngine, "_instance", None)
    monkeypatch.setattr(builtins, "__import__", no_espeak)
    with pytest.raises(DataError, match=r'pip install "lightning_tts\[espeak\]"'):
        build_espeak_corpus(tmp_path / "none", EspeakConfig(speakers=1, utterances=1), workers=1, progress=False)
    assert not (tmp_path / "none").exists()  # nothing written before the failure


def test_sentences_are_known_words_varied_and_deterministic() -> None:
    words = vocabulary()
    assert not sorted(w for w in words if w not in _cmudict())  # every word has a CMUdict pronunciation
    sentences = [make_sentence(np.random.default_rng([5, i])) for i in range(300)]
    assert sentences == [make_sentence(np.random.default_rng([5, i])) for i in range(300)]
    assert len(set(sentences)) >= 295 and all(s[0].isupper() and s[-1] in ".?" for s in sentences)
    seen = {w.strip(",.?").lower() for s in sentences for w in s.split()}
    assert seen <= words and len(seen) > 0.8 * len(words)
    assert len(TEMPLATES) >= 10
