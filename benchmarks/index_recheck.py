"""Cache re-check: how long does every run's ``prepare`` take to find a LibriTTS-sized corpus unchanged?

Writes a LibriTTS-layout tree (``train-clean-360/<spk>/<chapter>/<stem>.wav`` with ``.normalized.txt``
and ``.original.txt``, ``SPEAKERS.txt``) of tiny WAV files (a header and 64 samples: the re-check only
stats audio, so their size does not matter), builds its feature cache once, and times ``prepare`` on
the unchanged tree: list the tree and read every transcript, stat every audio file and every
feature file, compare with the index. The page cache is warm (the tree was just written and read).

The one-time build is setup, not measured: it probes every header for real, but its feature files
are placeholders written by a stand-in for ``_extract_batch`` (the re-check never opens a feature
file whose stat matches the index, and extracting every clip is the very cost it is compared with).
What extracting costs per utterance is measured by the feature-cache benchmark (``benchmarks/run.py``,
row 3); ``python -m benchmarks`` puts the two side by side.

    python -m benchmarks.index_recheck [--speakers 2456] [--utterances 375000] [--repeats 3] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import psutil
import soundfile as sf

import lightning_tts.data.cache as cache_module
from lightning_tts.audio import FeatureParams
from lightning_tts.config import load_config
from lightning_tts.data.cache import prepare, preprocess
from lightning_tts.data.corpora import build_reader

SUBSET = "train-clean-360"
WORDS = "the of and to a in that he was it his is with as had for her at by on not be which you".split()


def write_tree(root: Path, speakers: int, utterances: int, per_chapter: int = 50) -> None:
    """A LibriTTS-layout tree of ``utterances`` tiny WAV files with both transcripts, over ``speakers`` speakers."""
    owner = np.sort(np.random.default_rng(0).integers(0, speakers, utterances))
    clip = root / "clip.wav"
    root.mkdir(parents=True, exist_ok=True)
    sf.write(clip, np.zeros(64, dtype=np.float32), 24000, subtype="PCM_16")
    wav = clip.read_bytes()
    clip.unlink()
    made: set[Path] = set()
    lines = [";ID  |SEX| SUBSET           |NAME"]
    for i in range(utterances):
        spk, chapter = 100 + int(owner[i]), i // per_chapter
        folder = root / SUBSET / str(spk) / str(chapter)
        if folder not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(folder)
        stem = f"{spk}_{chapter}_{i:06d}_{i % per_chapter:06d}"
        text = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(8 + i % 12))
        (folder / f"{stem}.wav").write_bytes(wav)
        (folder / f"{stem}.normalized.txt").write_text(text)
        (folder / f"{stem}.original.txt").write_text(text.capitalize() + ".")
    lines += [f"{100 + s} | {'FM'[s % 2]} | {SUBSET} | Reader {100 + s}" for s in range(speakers)]
    (root / "SPEAKERS.txt").write_text("\n".join(lines) + "\n")


def _placeholder_extract(jobs: list[tuple[str, str, int, int]]) -> list[tuple[Optional[str], Optional[str]]]:
    """Setup stand-in for ``cache._extract_batch``: a placeholder file per job, no audio decoded."""
    for _, cache_path, _, _ in jobs:
        Path(cache_path).write_bytes(b"placeholder")
    return [("0" * 64, None) for _ in jobs]


def run(speakers: int, utterances: int, repeats: int) -> dict[str, Any]:
    """Write the tree, build its cache once, then time re-checks of the unchanged tree; returns the numbers."""
    proc = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "LibriTTS"
        t0 = time.perf_counter()
        write_tree(root, speakers, utterances)
        t_write = time.perf_counter() - t0
        cfg = load_config([], ["data.corpus=libritts", f"data.root={root}", f"data.subsets=[{SUBSET}]",
                               f"data.cache_dir={Path(tmp) / 'cache'}", "data.min_duration=0.0",
                               "data.preprocess_workers=1"])
        params = FeatureParams.from_config(cfg.features)
        real = cache_module._extract_batch
        cache_module._extract_batch = _placeholder_extract
        try:
            t0 = time.perf_counter()
            _, built = preprocess(cfg.data, params, phonemes=cfg.text.phonemes, progress=False)
            t_build = time.perf_counter() - t0
        finally:
            cache_module._extract_batch = real
        assert built.changes is not None and built.changes.extracted == len(built.utterances) == utterances
        t0 = time.perf_counter()
        build_reader(cfg.data).listing()
        t_listing = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            _, index = prepare(cfg.data, params, phonemes=cfg.text.phonemes, progress=False)
            times.append(time.perf_counter() - t0)
            assert index.changes is not None and not index.changes.any and len(index.utterances) == utterances
    median = statistics.median(times)
    return {
        "speakers": speakers, "utterances": utterances, "files_on_disk": 3 * utterances,
        "tree_write_s": round(t_write, 2), "setup_build_s": round(t_build, 2),
        "listing_s": round(t_listing, 3),
        "recheck": {"median_s": median, "min_s": min(times), "max_s": max(times), "repeats": repeats},
        "recheck_us_per_utterance": median / utterances * 1e6,
        "rss_after_mb": round(proc.memory_info().rss / 2**20, 1),  # this process after the setup and the re-checks
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", type=int, default=2456)
    parser.add_argument("--utterances", type=int, default=375_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    args = parser.parse_args()
    result = run(args.speakers, args.utterances, args.repeats)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
