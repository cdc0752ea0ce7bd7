"""Speed and memory of lightning_tts, each measured against a baseline run in the same process.

    python -m benchmarks [--quick] [--out-dir benchmarks/results]

Writes ``<out-dir>/<machine>-<date>.json`` (every number, medians with min/max over repeats, the
machine) and ``.md`` (the table quoted in README "Performance"), and prints the table. ``--quick``
uses small sizes and few repeats; the README quotes a full run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import psutil
import torch

from benchmarks.evaluation_workers import evaluation_row, evaluation_workers

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- helpers

def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median, min and max seconds of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def peak_memory_mb() -> float:
    """Peak memory so far: CUDA allocator peak when on GPU, else the process's peak RSS."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}


def corpus(tmp: Path, speakers: int, utterances: int) -> Path:
    from lightning_tts.data.synthetic import build_synthetic_corpus

    return build_synthetic_corpus(tmp / "corpus", speakers=speakers, utterances=utterances, seed=7, workers=2,
                                  progress=False)


# ---------------------------------------------------------------- 1, 2: meta-step cost, higher vs func
def learner_steps(root: Path, tmp: Path, repeats: int, inner_steps: int, shots: int, device: str = "cpu",
                  autocast: Optional[torch.dtype] = None) -> dict[str, Any]:
    """Seconds per optimiser step of each learner on the same K+Q utterances, against the plain step
    (on ``device``, under ``autocast`` when given)."""
    from lightning_tts.config import load_config
    from lightning_tts.data.tasks import TaskBatch
    from lightning_tts.data.datamodule import build_datamodule
    from lightning_tts.data.plans import TaskBatches
    from lightning_tts.learners import build_learner, get_learner

    def learner_and_batch(*overrides: str):
        cfg = load_config([], [f"data.root={root}", f"data.cache_dir={tmp / 'cache'}", "data.splits.val=2",
                               "data.splits.test=2", f"data.tasks.shots={shots}", f"data.tasks.queries={shots}",
                               "data.tasks.tasks_per_batch=1", *overrides])
        cls = get_learner(cfg.learner.name)
        dm = build_datamodule(cfg, cls.batches, progress=False)
        learner = build_learner(cfg, speakers=dm.split.train, symbols=dm.text.symbols)
        episodic = build_datamodule(cfg, TaskBatches(), progress=False)
        task_batch: TaskBatch = next(iter(episodic.train_dataloader()))
        moved = TaskBatch(task_batch.support.to(device), task_batch.query.to(device), task_batch.shots,
                          task_batch.queries)
        return learner.to(device), moved

    def step_fn(learner, batch) -> Callable[[], None]:
        opt = torch.optim.AdamW([p for p in learner.parameters() if p.requires_grad], lr=1e-4)

        def step() -> None:
            with torch.autocast(device.split(":")[0], dtype=autocast, enabled=autocast is not None):
                loss = learner.training_step(batch, 0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        learner.log = lambda *a, **k: None  # no trainer attached
        learner.log_dict = lambda *a, **k: None
        return step

    def utterances(task_batch: TaskBatch):
        """The task's K support + Q query utterances as one utterance batch (for the plain step)."""
        from lightning_tts.data.tasks import UtteranceBatch
        s, q = task_batch.support, task_batch.query
        rows = [s.select([i]) for i in range(len(s))] + [q.select([i]) for i in range(len(q))]
        l_max, t_max = max(int(r.token_lengths[0]) for r in rows), max(int(r.mel_lengths[0]) for r in rows)
        pad = lambda x, n: torch.nn.functional.pad(x, (0, 0) * (x.dim() - 2) + (0, n - x.shape[1]))  # noqa: E731
        return UtteranceBatch(tokens=torch.cat([pad(r.tokens, l_max) for r in rows]),
                              token_lengths=torch.cat([r.token_lengths for r in rows]),
                              mels=torch.cat([pad(r.mels, t_max) for r in rows]),
                              mel_lengths=torch.cat([r.mel_lengths for r in rows]),
                              speaker_ids=torch.zeros(len(rows), dtype=torch.long, device=s.tokens.device),
                              speakers=[r.speakers[0] for r in rows], utterance_ids=[r.utterance_ids[0] for r in rows])

    results: dict[str, Any] = {"inner_steps": inner_steps, "shots": shots, "queries": shots}
    plain, task_batch = learner_and_batch("learner.name=multispeaker")
    results["multispeaker"] = timed(step_fn(plain, utterances(task_batch)), repeats)
    base = results["multispeaker"]["median_s"]
    n, k, q = inner_steps, shots, shots
    floors = {"second": (7 * n * k + 3 * q) / (3 * (k + q)), "first": (3 * n * k + 3 * q) / (3 * (k + q))}
    for name, overrides, order in (("maml_func_2nd", ("learner.backend=func",), "second"),
                                   ("maml_func_1st", ("learner.backend=func", "learner.first_order=true"), "first"),
                                   ("maml_higher_2nd", ("learner.backend=higher",), "second"),
                                   ("maml_higher_1st", ("learner.backend=higher", "learner.first_order=true"), "first")):
        learner, batch = learner_and_batch("learner.name=maml", f"learner.inner_steps={inner_steps}", *overrides)
        learner.eval()  # no dropout: the same computation every repeat
        row = timed(step_fn(learner, batch), repeats)
        row["ratio"] = row["median_s"] / base
        row["analytic_floor"] = floors[order]
        row["ratio_to_floor"] = row["ratio"] / floors[order]
        results[name] = row
    mann, batch = learner_and_batch("learner.name=mann")
    results["mann"] = {**timed(step_fn(mann, batch), repeats)}
    results["mann"]["ratio"] = results["mann"]["median_s"] / base
    frames = int(task_batch.support.mel_lengths.sum() + task_batch.query.mel_lengths.sum())
    for name in ("multispeaker", "maml_func_2nd", "maml_func_1st", "maml_higher_2nd", "maml_higher_1st", "mann"):
        results[name]["frames_per_s"] = frames / results[name]["median_s"]
    results["peak_memory_mb"] = peak_memory_mb()
    results["meta_gradient_max_abs_diff"] = higher_vs_func(learner_and_batch)
    return results


def higher_vs_func(learner_and_batch) -> float:
    """Largest |difference| between the two backends' meta-gradients on the same task and weights."""
    grads = []
    for backend in ("func", "higher"):
        torch.manual_seed(0)
        learner, batch = learner_and_batch("learner.name=maml", f"learner.backend={backend}")
        learner.eval()
        torch.manual_seed(0)
        learner.zero_grad()
        learner.meta_losses(batch.task(0))["loss"].backward()
        grads.append({n: p.grad.clone() for n, p in learner.named_parameters() if p.grad is not None})
    return float(max((grads[0][n] - grads[1][n]).abs().max() for n in grads[0]))


# ---------------------------------------------------------------- 3: feature cache throughput
def cache_throughput(root: Path, tmp: Path) -> dict[str, Any]:
    """Preprocess (read, resample, log-mel, tokens, atomic per-file writes, index) with 1 and 2 workers
    vs a naive single-process read + log-mel loop that writes nothing."""
    from lightning_tts.audio import FeatureExtractor, FeatureParams, read_audio
    from lightning_tts.config import load_config
    from lightning_tts.data.cache import preprocess

    params = FeatureParams()
    cfg = load_config([], [f"data.root={root}"])
    extractor = FeatureExtractor(params)
    files = sorted(root.rglob("*.flac"))
    audio_s = sum(read_audio(f, params.sample_rate).numel() for f in files) / params.sample_rate
    warm = dict(cfg.data)
    warm.update({"cache_dir": str(tmp / "cache_warmup"), "preprocess_workers": 1})
    preprocess(warm, params, phonemes=True, progress=False)  # not timed: loads CMUdict, warms the file cache
    t0 = time.perf_counter()
    for f in files:
        extractor(read_audio(f, params.sample_rate))
    naive = time.perf_counter() - t0
    out: dict[str, Any] = {"utterances": len(files), "audio_s": round(audio_s, 1),
                           "naive": {"seconds": naive, "x_real_time": audio_s / naive}}
    for workers in (1, 2):
        data = dict(cfg.data)
        data.update({"cache_dir": str(tmp / f"cache_w{workers}"), "preprocess_workers": workers})
        t0 = time.perf_counter()
        preprocess(data, params, phonemes=True, progress=False)
        seconds = time.perf_counter() - t0
        out[f"workers_{workers}"] = {"seconds": seconds, "x_real_time": audio_s / seconds,
                                     "utterances_per_s": len(files) / seconds}
    out["peak_rss_mb"] = peak_memory_mb()
    return out


# ---------------------------------------------------------------- 5, 6: metrics
def metric_costs(pairs: int) -> dict[str, Any]:
    """MCD-DTW on real-speech pairs vs pymcd's dtw mode: speed end to end (each with its own
    mel-cepstra), values on the same mel-cepstra (the two feature front ends differ by design, see
    README "Evaluation"); PESQ and STOI cost per utterance."""
    import pysptk
    import soundfile as sf

    from lightning_tts.audio import resample
    from lightning_tts.metrics import mcd, mcd_from_mcep, pesq_score, stoi_score

    wav, sr = sf.read(Path(pysptk.__file__).parent / "example_audio_data" / "arctic_a0007.wav", dtype="float64")
    rng = np.random.default_rng(0)
    made = []
    for i in range(pairs):  # the recording against a time-stretched, noisy, gain-changed copy of itself
        stretch = 0.85 + 0.3 * rng.random()
        idx = np.clip((np.arange(int(len(wav) * stretch)) / stretch).astype(int), 0, len(wav) - 1)
        made.append((wav, wav[idx] * (0.5 + rng.random()) + 0.003 * rng.standard_normal(len(idx))))
    t0 = time.perf_counter()
    ours = [mcd(a, b, sr) for a, b in made]
    t_ours = time.perf_counter() - t0
    out: dict[str, Any] = {"pairs": pairs, "sample_rate": sr, "ours_s": t_ours, "ours_mean_db": float(np.mean(ours))}
    try:
        from pymcd.mcd import Calculate_MCD
    except ImportError:
        out["pymcd"] = "not installed (pip install -e '.[test]')"
        Calculate_MCD = None
    if Calculate_MCD is not None:
        ref = Calculate_MCD(MCD_mode="dtw")
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i, (a, b) in enumerate(made):
                pa, pb = Path(tmp) / f"a{i}.wav", Path(tmp) / f"b{i}.wav"
                sf.write(pa, a, sr)
                sf.write(pb, b, sr)
                paths.append((str(pa), str(pb)))
            t0 = time.perf_counter()
            theirs = [ref.calculate_mcd(pa, pb) for pa, pb in paths]
            t_ref = time.perf_counter() - t0
            # the same mel-cepstra (pymcd's WORLD features, c0 kept as pymcd does): our exact DTW vs its fastdtw
            same = []
            for pa, pb in paths:
                ma, mb = (ref.wav2mcep_numpy(ref.load_wav(p, 22050)) for p in (pa, pb))
                same.append(mcd_from_mcep(ma, mb, use_dtw=True, include_c0=True)[0])
        rel = np.abs(np.array(same) - np.array(theirs)) / np.array(theirs)
        out.update({"pymcd_s": t_ref, "pymcd_mean_db": float(np.mean(theirs)), "speedup": t_ref / t_ours,
                    "same_features_max_relative_difference": float(rel.max()),
                    "same_features_median_relative_difference": float(np.median(rel)),
                    # fraction of pairs where ours <= pymcd: both report a mean along a path chosen for its total cost
                    "same_features_ours_not_larger_fraction": float(np.mean(np.array(same) <= np.array(theirs) + 1e-9))})
    ref16 = resample(torch.from_numpy(wav).float(), sr, 16000)
    deg16 = ref16 + 0.01 * torch.randn_like(ref16)
    out["pesq_per_utterance"] = timed(lambda: pesq_score(ref16, deg16, 16000), max(3, pairs // 10))
    out["stoi_per_utterance"] = timed(lambda: stoi_score(ref16, deg16, 16000), max(3, pairs // 10))
    out["utterance_s"] = len(ref16) / 16000
    return out


# ---------------------------------------------------------------- 7: synthesis speed
def synthesis_rtf(repeats: int) -> dict[str, Any]:
    """Real-time factor of the tiny acoustic model alone and with Griffin-Lim (32 iterations).

    The model is untrained, so the durations are fixed (300 frames, 4.8 s for one sentence) rather
    than predicted; the duration predictor still runs, so the cost is that of real synthesis.
    """
    from lightning_tts.audio import FeatureParams
    from lightning_tts.models.acoustic import AcousticModel, ModelConfig
    from lightning_tts.models.vocoder import VocoderConfig, build_vocoder
    from lightning_tts.text import SYMBOLS, TextProcessor

    params = FeatureParams()
    text = TextProcessor(SYMBOLS, phonemes=True)
    model = AcousticModel(ModelConfig(), len(SYMBOLS), params.n_mels).eval()
    tokens = torch.tensor(text.encode("Please call Stella and ask her to bring these things with her from the store."))[None]
    lengths, speaker = torch.tensor([tokens.shape[1]]), torch.zeros(1, model.speaker_dim)
    frames = 300
    durations = torch.full(tokens.shape, frames // tokens.shape[1])
    durations[0, : frames - int(durations.sum())] += 1
    vocoder = build_vocoder(VocoderConfig(), params)  # Griffin-Lim, 32 iterations

    @torch.no_grad()
    def acoustic() -> torch.Tensor:
        return model(tokens, lengths, speaker, durations=durations).mel[0]

    mel = acoustic()
    audio_s = mel.shape[0] * params.hop_length / params.sample_rate
    a = timed(acoustic, repeats)
    v = timed(lambda: vocoder(mel), repeats)
    return {"audio_s": audio_s, "acoustic": a, "griffin_lim": v, "acoustic_rtf": a["median_s"] / audio_s,
            "with_griffin_lim_rtf": (a["median_s"] + v["median_s"]) / audio_s}


# ---------------------------------------------------------------- 4 and the table
def index_scale(speakers: int, utterances: int) -> dict[str, Any]:
    """``benchmarks.index_scale`` in a fresh process (its RSS is then that of torch + the index alone)."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "index.json"
        subprocess.run([sys.executable, "-m", "benchmarks.index_scale", "--speakers", str(speakers),
                        "--utterances", str(utterances), "--out", str(out)], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def index_recheck(speakers: int, utterances: int, repeats: int) -> dict[str, Any]:
    """``benchmarks.index_recheck`` in a fresh process: ``prepare`` on an unchanged LibriTTS-layout tree."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "recheck.json"
        subprocess.run([sys.executable, "-m", "benchmarks.index_recheck", "--speakers", str(speakers),
                        "--utterances", str(utterances), "--repeats", str(repeats), "--out", str(out)], check=True,
                       cwd=ROOT, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def recheck_row(r: dict[str, Any], cache: dict[str, Any]) -> tuple[str, ...]:
    """Table row of the re-check against extracting once (row 3, 2 workers), per utterance."""
    extract_us = 1e6 / cache["workers_2"]["utterances_per_s"]
    fraction = r["recheck_us_per_utterance"] / extract_us
    at_scale = r["recheck_us_per_utterance"] * 375_000 / 1e6
    scale = "" if r["utterances"] == 375_000 else f"; {at_scale:.1f} s projected for 375,000"
    return ("4", f"cache re-check, {r['utterances']:,} unchanged utterances (LibriTTS layout)",
            f"{r['recheck']['median_s']:.2f} s",
            f"{r['recheck_us_per_utterance']:.0f} us/utt = {100 * fraction:.1f} % of extracting once "
            f"({extract_us:.0f} us/utt){scale}",
            f"< 10 %: {'met' if fraction < 0.1 else 'missed'}; < 30 s at 375k: {'met' if at_scale < 30 else 'missed'}")


def gpu_section(root: Path, tmp: Path, repeats: int) -> dict[str, Any]:
    """Frames/s and peak memory per learner step in fp32 and bf16 autocast (CUDA only)."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0)}
    for precision, dtype in (("fp32", None), ("bf16-mixed", torch.bfloat16)):
        torch.cuda.reset_peak_memory_stats()
        out[precision] = learner_steps(root, tmp, repeats, inner_steps=3, shots=5, device="cuda", autocast=dtype)
    return out


def table(results: dict[str, Any]) -> str:
    """The Markdown table of a results dict."""
    m, c, x, s, i = (results[k] for k in ("learner_steps", "cache", "metrics", "synthesis", "index"))
    rows = [("1", "plain step (multispeaker, K+Q utterances)", f"{m['multispeaker']['median_s']:.3f} s", "baseline", "")]
    for name in ("maml_func_2nd", "maml_func_1st", "maml_higher_2nd", "maml_higher_1st"):
        r = m[name]
        verdict = "met" if r["ratio_to_floor"] <= 1.25 else "missed"
        rows.append(("1", f"{name} (N={m['inner_steps']}, K=Q={m['shots']})", f"{r['median_s']:.3f} s",
                     f"{r['ratio']:.2f}x plain; floor {r['analytic_floor']:.1f}x -> {r['ratio_to_floor']:.2f}x floor",
                     f"<= 1.25x floor: {verdict}"))
    rows.append(("1", "mann step", f"{m['mann']['median_s']:.3f} s", f"{m['mann']['ratio']:.2f}x plain", ""))
    rows.append(("2", "higher vs func meta-gradient", "", f"max |diff| {m['meta_gradient_max_abs_diff']:.1e}", "agree"))
    for w in (1, 2):
        r = c[f"workers_{w}"]
        rows.append(("3", f"feature cache, {w} worker(s)", f"{r['utterances_per_s']:.1f} utt/s",
                     f"{r['x_real_time']:.0f}x real time (naive loop {c['naive']['x_real_time']:.0f}x)",
                     f">= 300x: {'met' if r['x_real_time'] >= 300 else 'missed'}" if w == 2 else ""))
    rows.append(("4", f"index of {i['utterances']:,} utterances ({i['hours']} h)", f"{i['index_read_s']} s",
                 f"process RSS {i['rss_mb']:.0f} MB (index {i['index_rss_mb']:.0f} MB); "
                 f"{i['task_batches_per_s']:.0f} task batches/s",
                 f"< 1 GB: {'met' if i['rss_mb'] < 1024 else 'missed'}"))
    rows.append(recheck_row(results["recheck"], c))
    if "speedup" in x:
        rows.append(("5", f"MCD-DTW, {x['pairs']} real-speech pairs", f"{x['ours_s']:.2f} s",
                     f"pymcd {x['pymcd_s']:.2f} s ({x['speedup']:.1f}x); same features: max rel. diff "
                     f"{100 * x['same_features_max_relative_difference']:.2f} %",
                     f"1 %: {'met' if x['same_features_max_relative_difference'] <= 0.01 else 'missed'}; 10x: "
                     f"{'met' if x['speedup'] >= 10 else 'missed'}"))
    rows.append(("6", f"PESQ / STOI per {x['utterance_s']:.1f} s utterance",
                 f"{x['pesq_per_utterance']['median_s']:.3f} / {x['stoi_per_utterance']['median_s']:.3f} s",
                 "one process scores its speakers serially; row 9 shares them among processes", ""))
    rows.append(("7", "synthesis RTF (CPU), acoustic / + Griffin-Lim 32 it.",
                 f"{s['acoustic_rtf']:.4f} / {s['with_griffin_lim_rtf']:.3f}", f"of {s['audio_s']:.1f} s audio",
                 f"<= 0.02: {'met' if s['acoustic_rtf'] <= 0.02 else 'missed'}; <= 0.2: "
                 f"{'met' if s['with_griffin_lim_rtf'] <= 0.2 else 'missed'}"))
    gpu = results["gpu"]
    if "skipped" in gpu:
        rows.append(("8", "GPU section", "", gpu["skipped"], ""))
    else:
        for name in ("multispeaker", "maml_func_2nd", "mann"):
            rows.append(("8", f"{gpu['device']}: {name} frames/s, fp32 / bf16-mixed",
                         f"{gpu['fp32'][name]['frames_per_s']:.0f} / {gpu['bf16-mixed'][name]['frames_per_s']:.0f}",
                         f"peak memory {gpu['fp32']['peak_memory_mb']:.0f} / {gpu['bf16-mixed']['peak_memory_mb']:.0f} MB",
                         ""))
    rows.append(evaluation_row(results["evaluation"]))
    lines = ["| # | benchmark | median | against the baseline | target |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    quick = args.quick
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root = corpus(tmp, speakers=8 if quick else 12, utterances=12 if quick else 30)
        results: dict[str, Any] = {"quick": quick, "date": datetime.date.today().isoformat(), "machine": machine()}
        results["cache"] = cache_throughput(root, tmp)
        results["learner_steps"] = learner_steps(root, tmp, repeats=2 if quick else 5, inner_steps=3, shots=5)
        results["metrics"] = metric_costs(pairs=10 if quick else 100)
        results["synthesis"] = synthesis_rtf(repeats=2 if quick else 5)
        results["index"] = index_scale(200 if quick else 2456, 6000 if quick else 375_000)
        results["recheck"] = index_recheck(200 if quick else 2456, 6000 if quick else 375_000, 2 if quick else 3)
        results["evaluation"] = evaluation_workers(root, tmp, speakers=2 if quick else 4, max_steps=20 if quick else 200)
        results["gpu"] = gpu_section(root, tmp, repeats=2 if quick else 5)
    results["seconds"] = time.perf_counter() - started
    markdown = table(results)
    name = f"{platform.node() or 'machine'}-{results['date']}{'-quick' if quick else ''}"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    from lightning_tts.atomic import write_json, write_text

    write_json(args.out_dir / f"{name}.json", results)
    write_text(args.out_dir / f"{name}.md", markdown + "\n")
    print(markdown)
    print(f"\nwrote {args.out_dir / (name + '.json')} and .md in {results['seconds']:.0f} s", file=sys.stderr)
    return 0
