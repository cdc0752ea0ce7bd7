"""Index scale: can a LibriTTS-sized corpus (585 h, 2,456 speakers, ~375k utterances) be indexed and
sampled in well under 1 GB of RAM?

Writes a manifest of that size (durations included, as real manifests carry them, so no audio is
opened), reads it with ``ManifestCorpus``, splits speakers, builds the episodic sampler and draws
tasks. Reports peak RSS (psutil, this process) and timings.

    python -m benchmarks.index_scale [--speakers 2456] [--utterances 375000] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from lightning_tts.data.corpora import ManifestCorpus
from lightning_tts.data.datamodule import split_speakers
from lightning_tts.data.tasks import SpeakerGroupSampler, group_by_speaker

HOURS = 585.0


def write_manifest(path: Path, speakers: int, utterances: int, seed: int = 0) -> None:
    """A CSV manifest with LibriTTS-like ids, texts and durations (mean 585 h / 375k = 5.6 s)."""
    rng = np.random.default_rng(seed)
    owner = np.sort(rng.integers(0, speakers, utterances))
    durations = rng.gamma(2.0, HOURS * 3600 / utterances / 2.0, utterances).clip(0.5, 35.0)
    words = "the of and to a in that he was it his is with as had for her at by on not be which you".split()
    with path.open("w") as f:
        f.write("audio,text,speaker,duration\n")
        for i in range(utterances):
            spk = 100 + int(owner[i])
            text = " ".join(words[(i * 7 + k) % len(words)] for k in range(8 + i % 12))
            f.write(f"train-clean-360/{spk}/{i // 50}/{spk}_{i // 50}_{i:06d}_{i % 50:06d}.wav,{text},{spk},"
                    f"{durations[i]:.2f}\n")


def run(speakers: int, utterances: int) -> dict:
    """Measure indexing and sampling; returns the numbers."""
    proc = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "libritts_scale.csv"
        t0 = time.perf_counter()
        write_manifest(manifest, speakers, utterances)
        t_write = time.perf_counter() - t0
        rss_before = proc.memory_info().rss
        t0 = time.perf_counter()
        index = ManifestCorpus(manifest, min_duration=0.3, max_duration=40.0).read()
        t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    split = split_speakers(index, {"file": None, "val_speakers": [], "test_speakers": [], "val": 40, "test": 40,
                                   "seed": 0, "heldout_utterances": 2})
    by_speaker = group_by_speaker([u.speaker for u in index.utterances])
    sampler = SpeakerGroupSampler({s: by_speaker[s] for s in split.train}, group_size=10, groups_per_batch=8,
                                  batches_per_epoch=1000, seed=0)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    it = iter(sampler)
    next(it)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = sum(1 for _ in it) + 1
    t_tasks = time.perf_counter() - t0
    rss = proc.memory_info().rss
    return {
        "speakers": len(by_speaker), "utterances": len(index.utterances),
        "hours": round(sum(u.duration for u in index.utterances) / 3600, 1),
        "manifest_write_s": round(t_write, 2), "index_read_s": round(t_read, 2), "split_and_sampler_s": round(t_build, 2),
        "time_to_first_task_batch_s": round(t_first, 4), "task_batches_per_s": round((n - 1) / max(t_tasks, 1e-9), 1),
        "rss_mb": round(rss / 2**20, 1), "index_rss_mb": round((rss - rss_before) / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", type=int, default=2456)
    parser.add_argument("--utterances", type=int, default=375_000)
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    args = parser.parse_args()
    result = run(args.speakers, args.utterances)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
