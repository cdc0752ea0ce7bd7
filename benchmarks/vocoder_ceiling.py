"""Vocoder ceiling: how close does each vocoder get to the recording when given the recording's own mel?

For held-out recordings of a corpus (default: the eSpeak NG corpus, 22 050 Hz; the last ``--speakers``
speakers, ``--utterances`` each), every vocoder turns the recording's log-mel (the ``hifigan_22k``
feature parameters: 80 mels, n_fft 1024, hop 256, fmax 8000) back into a waveform, which is scored
against the recording with the same ``score_pair`` as ``evaluate`` (MCD-DTW, F0 RMSE, V/UV error,
PESQ, STOI, WER/CER by the offline recogniser, speaker similarity by ``--judge``), plus the real-time
factor (vocoding seconds / audio seconds; median over utterances, ``torch`` threads as set by
``--threads``). The recordings' own WER is the reference row. Run it on a quiet machine.

    python -m benchmarks.vocoder_ceiling [--corpus artifacts/espeak] [--speakers 6] [--utterances 5] \\
        [--vocoders griffin_lim,hifigan] [--judge resemblyzer] [--threads 2] [--out-dir benchmarks/results]

Writes ``<out-dir>/vocoder-ceiling-<corpus folder>-<machine>-<date>.json`` (every value) and ``.md`` (the README table).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Optional

import torch

from lightning_tts.audio import FeatureExtractor, FeatureParams, read_audio
from lightning_tts.data.corpora import VCTKCorpus
from lightning_tts.data.espeak import EspeakConfig, build_espeak_corpus
from lightning_tts.evaluation.judges import build_judge
from lightning_tts.evaluation.recognizer import transcriber
from lightning_tts.evaluation.scoring import LOWER_IS_BETTER, metric_names, score_pair, similarity_to
from lightning_tts.evaluation.stats import format_mean_ci, mean_ci
from lightning_tts.models.vocoder import VocoderConfig, build_vocoder
from lightning_tts.schema import build

FEATURES = FeatureParams(sample_rate=22050)  # conf/features/hifigan_22k.yaml


def held_out(corpus: Path, speakers: int, utterances: int) -> list[Any]:
    """The first ``utterances`` of each of the last ``speakers`` speakers (the test end of a
    count-based split)."""
    index = VCTKCorpus(corpus).read()
    names = sorted({u.speaker for u in index.utterances})[-speakers:]
    return [u for s in names for u in sorted((u for u in index.utterances if u.speaker == s),
                                               key=lambda u: u.utterance_id)[:utterances]]


def measure(corpus: Path, speakers: int, utterances: int, vocoders: list[str], judge: Optional[str]) -> dict[str, Any]:
    """Score every vocoder's resynthesis of the held-out recordings; returns the result record."""
    utts = held_out(corpus, speakers, utterances)
    sr = FEATURES.sample_rate
    extractor = FeatureExtractor(FEATURES)
    transcribe = transcriber(sr)
    embed = build_judge(judge, sr) if judge else None
    records = [(u, read_audio(u.path, sr)) for u in utts]
    references = {u.utterance_id: embed(wav) for u, wav in records} if embed else {}
    metrics = metric_names(embed is not None, True)
    rows = []
    systems: list[tuple[str, Any]] = [("recording", None)] + [(name, build_vocoder(build(VocoderConfig, {"name": name}),
                                                                                   FEATURES)) for name in vocoders]
    for system, vocoder in systems:
        scores, rtf = [], []
        for utt, wav in records:
            mel = extractor(wav)["mel"]  # (T, n_mels)
            start = time.perf_counter()
            out = wav if vocoder is None else vocoder(mel)
            rtf.append((time.perf_counter() - start) / (len(wav) / sr))
            similarity = similarity_to(references[utt.utterance_id], embed) if embed else None
            scores.append(score_pair(wav, out[: len(wav)], sr, similarity, utt.text, transcribe))
        row = {"system": system, "metrics": {m: mean_ci([s[m] for s in scores]) for m in metrics}}
        if vocoder is not None:
            row["rtf_median"] = statistics.median(rtf)
        rows.append(row)
        print(system, {m: round(row["metrics"][m]["mean"], 3) for m in metrics}, f"rtf={row.get('rtf_median')}",
              flush=True)
    return {"corpus": str(corpus), "utterances": [u.utterance_id for u in utts], "judge": judge,
            "features": FEATURES.__dict__, "metrics": metrics, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    """The README table: one row per system, mean ± 95 % CI half-width per metric, then RTF."""
    shown = [m for m in ("mcd", "f0_rmse", "vuv_error", "speaker_sim", "wer", "cer", "pesq", "stoi") if m in result["metrics"]]
    head = "| system | " + " | ".join(f"{m} {'↓' if LOWER_IS_BETTER[m] else '↑'}" for m in shown) + " | RTF (2 cores) |"
    lines = [head, "|" + "---|" * (len(shown) + 2)]
    for row in result["rows"]:
        cells = [format_mean_ci(row["metrics"][m]) for m in shown]
        rtf = f"{row['rtf_median']:.3f}" if "rtf_median" in row else "—"
        lines.append(f"| {row['system']} | " + " | ".join(cells) + f" | {rtf} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("artifacts/espeak"),
                        help="an eSpeak NG corpus (built here with its defaults when missing)")
    parser.add_argument("--speakers", type=int, default=6)
    parser.add_argument("--utterances", type=int, default=5)
    parser.add_argument("--vocoders", default="griffin_lim,hifigan")
    parser.add_argument("--judge", default="resemblyzer", help="speaker-similarity judge (build_judge); 'none' skips it")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.corpus / "espeak-voices.json").is_file():
        build_espeak_corpus(args.corpus, EspeakConfig())
    result = measure(args.corpus, args.speakers, args.utterances, args.vocoders.split(","),
                     None if args.judge == "none" else args.judge)
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                         "torch": torch.__version__, "date": datetime.date.today().isoformat()}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / (f"vocoder-ceiling-{args.corpus.name}-{platform.node() or 'machine'}-"
                           f"{datetime.date.today().isoformat()}")
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
