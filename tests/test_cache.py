"""Feature cache: preprocess end to end, resume after a kill, invalidation by feature parameters."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import write_libritts, write_vctk
from lightning_tts.audio import FeatureParams
from lightning_tts.cli import main
from lightning_tts.data.cache import preprocess


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
    assert len(index["utterances"]) == 140
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
