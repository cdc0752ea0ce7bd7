"""Feature cache: preprocess end to end, resume after a kill, invalidation by feature parameters, and a cache
that follows its corpus (added, edited, replaced, deleted recordings; damaged feature files; old indexes)."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest
import soundfile as sf
import torch

import lightning_tts.data.cache as cache_module
from conftest import tone, write_libritts, write_ljspeech, write_manifest, write_vctk
from lightning_tts.atomic import file_sha256
from lightning_tts.audio import FeatureParams
from lightning_tts.cli import main
from lightning_tts.data import corpora
from lightning_tts.data.cache import FeatureCache, prepare, preprocess
from lightning_tts.data.corpora import CorpusIndex, build_reader
from lightning_tts.data.datamodule import build_datamodule
from lightning_tts.data.plans import UtteranceBatches
from lightning_tts.data.synthetic import build_synthetic_corpus
from lightning_tts.errors import DataError


def test_preprocess_vctk_and_libritts_trees_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vctk = write_vctk(tmp_path / "VCTK-Corpus-0.92")
    (vctk / "txt" / "p225" / "p225_001.txt").unlink()
    args = ["--config", "conf/data/vctk.yaml", f"data.root={vctk}", f"data.cache_dir={tmp_path / 'c'}",
            "data.min_duration=0.1", "--no-progress"]
    assert main(["preprocess", *args]) == 0
    out = capsys.readouterr().out
    assert "vctk: 11 utterances from 3 speakers" in out and "skipped 1 (missing transcript: 1)" in out
    libri = write_libritts(tmp_path / "LibriTTS")
    assert main(["preprocess", "--config", "conf/data/libritts.yaml", f"data.root={libri}", "--no-progress",
                 "data.subsets=[train-clean-100,train-clean-360]", f"data.cache_dir={tmp_path / 'c'}"]) == 0
    assert "libritts: 12 utterances from 4 speakers" in capsys.readouterr().out
    report = json.loads(next((tmp_path / "c").glob("vctk-*/features-*/report.json")).read_text())
    assert report["by_reason"] == {"missing transcript": 1}


def test_undecodable_audio_is_counted_not_fatal(tmp_path: Path, make_cfg) -> None:
    root = write_vctk(tmp_path / "v", speakers=2, utts=3)
    flac = root / "wav48_silence_trimmed" / "p225" / "p225_002_mic1.flac"
    flac.write_bytes(flac.read_bytes()[:200])  # header intact, body truncated
    cfg = make_cfg(f"data.root={root}", "data.corpus=vctk", "data.min_duration=0.1")
    cache, index = preprocess(cfg.data, FeatureParams.from_config(cfg.features), progress=False)
    assert len(index.utterances) + index.skipped.total == 6 and index.skipped.total >= 1
    assert all(cache.path(u).is_file() for u in index.utterances)


def test_clip_shorter_than_one_stft_window_is_counted_not_fatal(tmp_path: Path, make_cfg) -> None:
    manifest = write_manifest(tmp_path / "m")
    sf.write(manifest.parent / "audio" / "spk0_0.wav", tone(0.01, 16000), 16000)
    manifest.write_text(manifest.read_text().replace("audio,text,speaker\n", "audio,text,speaker,duration\n")
                        .replace("spk0\n", "spk0,0.7\n").replace("spk1\n", "spk1,0.7\n"))
    cfg = make_cfg(f"data.root={manifest}", "data.corpus=manifest")
    _, index = preprocess(cfg.data, FeatureParams.from_config(cfg.features), progress=False)
    assert len(index.utterances) == 5 and index.skipped.counts == {"undecodable audio": 1}
    report = json.loads(next(Path(cfg.data.cache_dir).rglob("report.json")).read_text())
    assert "160 samples at 16000 Hz, shorter than half an STFT window (n_fft 1024)" in json.dumps(report)


def test_resume_after_kill(tmp_path: Path, synthetic_root: Path) -> None:
    cache_dir = tmp_path / "cache"
    overrides = [f"data.root={synthetic_root}", f"data.cache_dir={cache_dir}", "data.preprocess_workers=1"]
    script = textwrap.dedent(f"""
        import os, signal, sys
        import lightning_tts.data.cache as cache
        real, calls = cache._extract_batch, [0]
        def dying(jobs):
            calls[0] += 1
            if calls[0] == 4:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(jobs)
        cache._extract_batch = dying
        from lightning_tts.cli import main
        sys.exit(main(["preprocess", "--no-progress", *{overrides!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    feature_dir = next(cache_dir.glob("synthetic-*/features-*"))
    done = sorted(feature_dir.glob("*/*.pt"))
    assert 0 < len(done) < 140 and not (feature_dir / "index.json").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in done}
    stale = done[0].parent / f".{done[0].name}.tmp-killed.pt"
    stale.write_bytes(b"half a file")
    assert main(["preprocess", "--no-progress", *overrides]) == 0
    assert not stale.exists()
    assert len(list(feature_dir.glob("*/*.pt"))) == 140
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # finished work is kept, not redone
    index = json.loads((feature_dir / "index.json").read_text())
    assert len(index["recordings"]) == 140 and all(row[index["columns"].index("reason")] is None
                                                   for row in index["recordings"])
    for path in feature_dir.glob("*/*.pt"):
        assert torch.load(path, weights_only=True)["mel"].shape[1] == 80


def test_changing_n_mels_builds_a_new_cache(tmp_path: Path, synthetic_root: Path, make_cfg) -> None:
    cfg80 = make_cfg(f"data.root={synthetic_root}")
    cfg40 = make_cfg(f"data.root={synthetic_root}", "features.n_mels=40")
    cache80, index = preprocess(cfg80.data, FeatureParams.from_config(cfg80.features), progress=False)
    before = {p: p.stat().st_mtime_ns for p in cache80.directory.glob("*/*.pt")}
    cache40, _ = preprocess(cfg40.data, FeatureParams.from_config(cfg40.features), progress=False)
    assert cache40.directory != cache80.directory
    assert cache40.load(index.utterances[0])["mel"].shape[1] == 40
    assert cache80.load(index.utterances[0])["mel"].shape[1] == 80
    assert {p: p.stat().st_mtime_ns for p in cache80.directory.glob("*/*.pt")} == before


def test_pitch_and_energy_are_cached_when_asked(tmp_path: Path, synthetic_root: Path, make_cfg) -> None:
    cfg = make_cfg(f"data.root={synthetic_root}", "features.pitch=true", "features.energy=true")
    cache, index = preprocess(cfg.data, FeatureParams.from_config(cfg.features), progress=False)
    feats = cache.load(index.utterances[0])
    assert feats["pitch"].shape == feats["energy"].shape == feats["mel"].shape[:1]
    assert float((feats["pitch"] > 0).float().mean()) > 0.3


# ---------------------------------------------------------------- a cache that follows the corpus
NEW_TEXT = "The garden is quiet in the evening."


def _cfg(make_cfg, root: Path, corpus: str, *overrides: str):
    return make_cfg(f"data.root={root}", f"data.corpus={corpus}", "data.min_duration=0.1",
                    "data.subsets=[train-clean-100,train-clean-360]", *overrides)


def _prepare(cfg) -> tuple[FeatureCache, CorpusIndex]:
    return prepare(cfg.data, FeatureParams.from_config(cfg.features), phonemes=cfg.text.phonemes, progress=False)


def _mtimes(cache: FeatureCache) -> dict[Path, int]:
    return {p.relative_to(cache.directory): p.stat().st_mtime_ns for p in cache.directory.glob("*/*.pt")}


def _without(mtimes: dict[Path, int], changed: Path) -> dict[Path, int]:
    return {p: t for p, t in mtimes.items() if p != changed}


def _texts(index: CorpusIndex) -> dict[str, str]:
    return {u.utterance_id: u.text for u in index.utterances}


# Each layout writes a tiny corpus and returns its root and a ``change`` that adds one recording, edits one
# transcript and deletes one recording (for the table corpora: its row and its file), returning their ids.
def _vctk(tmp: Path) -> tuple[Path, Callable[[], tuple[str, str, str]]]:
    root = write_vctk(tmp / "vctk", speakers=3, utts=3)

    def change() -> tuple[str, str, str]:
        sf.write(root / "wav48_silence_trimmed" / "p225" / "p225_004_mic1.flac", tone(0.9, 48000, 150, seed=9), 48000)
        (root / "txt" / "p225" / "p225_004.txt").write_text(NEW_TEXT)
        (root / "txt" / "p226" / "p226_001.txt").write_text(NEW_TEXT + "\n")
        (root / "wav48_silence_trimmed" / "p227" / "p227_002_mic1.flac").unlink()
        return "p225_004", "p226_001", "p227_002"

    return root, change


def _libritts(tmp: Path) -> tuple[Path, Callable[[], tuple[str, str, str]]]:
    root = write_libritts(tmp / "libritts")
    chapter = root / "train-clean-100" / "19" / "198"

    def change() -> tuple[str, str, str]:
        sf.write(chapter / "19_198_000003_000003.wav", tone(0.9, 24000, 150, seed=9), 24000)
        (chapter / "19_198_000003_000003.normalized.txt").write_text(NEW_TEXT)
        (chapter / "19_198_000000_000000.normalized.txt").write_text(NEW_TEXT)
        (chapter / "19_198_000001_000001.wav").unlink()
        return "19_198_000003_000003", "19_198_000000_000000", "19_198_000001_000001"

    return root, change


def _ljspeech(tmp: Path) -> tuple[Path, Callable[[], tuple[str, str, str]]]:
    root = write_ljspeech(tmp / "ljspeech")

    def change() -> tuple[str, str, str]:
        rows = (root / "metadata.csv").read_text().splitlines()
        rows[0] = f"LJ001-0001|{NEW_TEXT}|{NEW_TEXT}"
        del rows[1]
        (root / "wavs" / "LJ001-0002.wav").unlink()
        sf.write(root / "wavs" / "LJ001-0009.wav", tone(0.9, 22050, 150, seed=9), 22050)
        (root / "metadata.csv").write_text("\n".join(rows + [f"LJ001-0009|{NEW_TEXT}|{NEW_TEXT}"]) + "\n")
        return "LJ001-0009", "LJ001-0001", "LJ001-0002"

    return root, change


def _manifest(tmp: Path) -> tuple[Path, Callable[[], tuple[str, str, str]]]:
    manifest = write_manifest(tmp / "manifest")

    def change() -> tuple[str, str, str]:
        lines = manifest.read_text().splitlines()
        lines[1] = f'audio/spk0_0.wav,"{NEW_TEXT}",spk0'
        del lines[2]
        (manifest.parent / "audio" / "spk0_1.wav").unlink()
        sf.write(manifest.parent / "audio" / "spk1_9.wav", tone(0.9, 16000, 150, seed=9), 16000)
        manifest.write_text("\n".join(lines + [f'audio/spk1_9.wav,"{NEW_TEXT}",spk1']) + "\n")
        return "spk1_9", "spk0_0", "spk0_1"

    return manifest, change


LAYOUTS = {"vctk": _vctk, "libritts": _libritts, "ljspeech": _ljspeech, "manifest": _manifest}


@pytest.mark.parametrize("corpus", sorted(LAYOUTS))
def test_every_reader_follows_its_corpus(corpus: str, tmp_path: Path, make_cfg,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root, change = LAYOUTS[corpus](tmp_path)
    cfg = _cfg(make_cfg, root, corpus)
    cache, before = _prepare(cfg)
    assert before.changes.previous == "no index yet" and before.changes.extracted == len(before.utterances)
    mtimes = _mtimes(cache)
    added, edited, deleted = change()
    cache, after = _prepare(cfg)
    assert after.changes.describe().startswith("corpus changes since the last index: +1 new, 1 changed, 1 removed; "
                                               "1 feature file extracted")
    texts = _texts(after)
    assert texts[added] == NEW_TEXT and texts[edited] == NEW_TEXT and deleted not in texts
    assert len(after.utterances) == len(before.utterances)
    new_mtimes = _mtimes(cache)
    kept = {p: t for p, t in mtimes.items() if p.stem != deleted}
    assert {p: new_mtimes[p] for p in kept} == kept  # nothing unchanged re-extracted (nor the edited text's audio)
    assert {p.stem for p in new_mtimes} == set(texts)  # the deleted recording's features are gone too
    for utt in after.utterances:
        assert cache.load(utt)["mel"].shape[1] == 80
    # the next run re-checks without opening any audio file, and finds nothing to do
    monkeypatch.setattr(corpora, "audio_info", _no_audio)
    monkeypatch.setattr(cache_module, "read_audio", _no_audio)
    index_mtime = cache.index_path.stat().st_mtime_ns
    cache, again = _prepare(cfg)
    assert not again.changes.any and again.changes.describe().startswith("corpus unchanged since the last index")
    assert _texts(again) == texts and cache.index_path.stat().st_mtime_ns == index_mtime


def _no_audio(*args: object, **kwargs: object) -> None:
    raise AssertionError("an unchanged corpus was re-checked by opening audio")


def test_new_speakers_and_transcripts_reach_the_data_module(tmp_path: Path, make_cfg) -> None:
    root = build_synthetic_corpus(tmp_path / "synthetic", speakers=4, utterances=3, seed=5, workers=1, progress=False)
    cfg = make_cfg(f"data.root={root}", "data.splits.val=1", "data.splits.test=1", "data.batch_size=4")
    dm = build_datamodule(cfg, UtteranceBatches(), progress=False)
    assert len(dm.split.train + dm.split.val + dm.split.test) == 4
    mtimes = _mtimes(dm.cache)
    build_synthetic_corpus(root, speakers=6, utterances=3, seed=5, workers=1, progress=False)  # two speakers more
    (root / "txt" / "p101" / "p101_002.txt").write_text(NEW_TEXT + "\n")
    dm = build_datamodule(cfg, UtteranceBatches(), progress=False)
    assert len(dm.index.utterances) == len(_mtimes(dm.cache)) == 18
    assert len(dm.split.train + dm.split.val + dm.split.test) == 6 and len(dm.index.speakers) == 6
    i = [u.utterance_id for u in dm.index.utterances].index("p101_002")
    assert dm.dataset[i]["tokens"].tolist() == dm.text.encode(NEW_TEXT)
    assert all(dm.dataset[j]["mel"].shape[1] == 80 for j in range(len(dm.dataset)))
    assert {p: t for p, t in _mtimes(dm.cache).items() if p in mtimes} == mtimes


def test_recording_replaced_under_the_same_name_is_re_extracted(tmp_path: Path, make_cfg) -> None:
    root = write_vctk(tmp_path / "vctk", speakers=2, utts=3)
    cfg = _cfg(make_cfg, root, "vctk")
    cache, index = _prepare(cfg)
    utt = next(u for u in index.utterances if u.utterance_id == "p225_002")
    old_mel, mtimes = cache.load(utt)["mel"], _mtimes(cache)
    flac = Path(utt.path)
    sf.write(flac, tone(1.1, 48000, 260, seed=4), 48000)  # another take: other length, other pitch
    cache, index = _prepare(cfg)
    assert (index.changes.changed, index.changes.new, index.changes.removed, index.changes.extracted) == (1, 0, 0, 1)
    with pytest.raises(DataError, match="made from other audio"):  # a run still holding the old index
        cache.load(utt)
    utt = next(u for u in index.utterances if u.utterance_id == "p225_002")
    new_mel = cache.load(utt)["mel"]
    assert new_mel.shape[0] > old_mel.shape[0] and utt.duration == pytest.approx(1.1)
    assert torch.load(cache.path(utt), weights_only=True)["source"]["sha256"] == file_sha256(flac)
    changed = cache.path(utt).relative_to(cache.directory)
    assert _without(_mtimes(cache), changed) == _without(mtimes, changed)


def test_verify_catches_audio_replaced_under_the_same_size_and_time(tmp_path: Path, make_cfg,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = write_vctk(tmp_path / "vctk", speakers=2, utts=3, version="0.80")
    cfg = _cfg(make_cfg, root, "vctk")
    cache, index = _prepare(cfg)
    utt = next(u for u in index.utterances if u.utterance_id == "p226_003")
    wav, old_mel, mtimes = Path(utt.path), cache.load(utt)["mel"], _mtimes(cache)
    st = wav.stat()
    sf.write(wav, tone(0.9, 48000, 300, seed=8), 48000)  # same length, same format: same size
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert wav.stat().st_size == st.st_size
    _, index = _prepare(cfg)
    assert not index.changes.any  # size and mtime alone cannot tell
    argv = ["preprocess", "--verify", "--no-progress", f"data.root={root}", "data.corpus=vctk", "data.min_duration=0.1",
            f"data.cache_dir={tmp_path / 'cache'}", "data.preprocess_workers=1"]
    assert main(argv) == 0
    assert "+0 new, 1 changed, 0 removed; 1 feature file extracted" in capsys.readouterr().out
    cache, index = _prepare(cfg)
    utt = next(u for u in index.utterances if u.utterance_id == "p226_003")
    assert not torch.equal(cache.load(utt)["mel"], old_mel) and utt.sha256 == file_sha256(wav)
    changed = cache.path(utt).relative_to(cache.directory)
    assert _without(_mtimes(cache), changed) == _without(mtimes, changed)


@pytest.mark.parametrize("damage", ["truncated", "same size and time"])
def test_damaged_feature_file_is_reported_in_one_line_and_rebuilt(damage: str, tmp_path: Path, make_cfg) -> None:
    root = write_vctk(tmp_path / "vctk", speakers=2, utts=3)
    cfg = _cfg(make_cfg, root, "vctk")
    cache, index = _prepare(cfg)
    utt = index.utterances[2]
    path, mtimes, mel = cache.path(utt), _mtimes(cache), cache.load(utt)["mel"]
    data, st = path.read_bytes(), path.stat()
    if damage == "truncated":  # a killed copy, a full disk
        path.write_bytes(data[: len(data) // 2])
    else:  # bits flipped in place: only reading the file tells
        path.write_bytes(data[:-64] + bytes(64))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DataError) as err:
        cache.load(utt)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "rerun" in message
    cache, index = _prepare(cfg)
    assert index.changes.extracted == index.changes.rebuilt == 1 and "1 damaged or missing" in index.changes.describe()
    assert torch.equal(cache.load(utt)["mel"], mel)
    changed = path.relative_to(cache.directory)
    assert _without(_mtimes(cache), changed) == _without(mtimes, changed)


def test_old_and_unreadable_indexes_are_rebuilt(tmp_path: Path, make_cfg) -> None:
    root = write_vctk(tmp_path / "vctk", speakers=2, utts=3)
    cfg = _cfg(make_cfg, root, "vctk")
    cache = FeatureCache.for_config(cfg.data, FeatureParams.from_config(cfg.features))
    listed, _ = build_reader(cfg.data).listing()
    for cand in listed:  # a cache written by the previous version: index format 1, bare feature dicts
        cache.path(cand).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"mel": torch.zeros(5, 80).half()}, cache.path(cand))
    cache.index_path.write_text(json.dumps({"version": 1, "corpus": "vctk", "root": str(root), "speakers": {},
                                            "utterances": [[c.utterance_id, c.speaker, c.path, c.text, 1.0]
                                                           for c in listed]}))
    cache, index = _prepare(cfg)
    assert index.changes.previous == "index format 1 replaced by 2" and index.changes.extracted == len(listed)
    assert all(cache.load(u)["mel"].shape[0] > 5 for u in index.utterances)
    mtimes = _mtimes(cache)
    text = cache.index_path.read_text()
    cache.index_path.write_text(text[: len(text) // 2])  # a half-written index (copied by hand, say)
    cache, index = _prepare(cfg)
    assert index.changes.previous.startswith(f"unreadable index {cache.index_path}")
    assert index.changes.extracted == 0 and _mtimes(cache) == mtimes  # intact feature files are kept
    _, index = _prepare(cfg)
    assert not index.changes.any
