"""Few-shot evaluation: adapt every checkpoint to each test speaker for every (shots, steps), synthesise
a fixed query set, and score it.

For each test speaker a seeded permutation of its utterances gives a fixed query set (the first
``data.tasks.queries``) and a support pool (the next ``max(shots)``; K shots use the first K),
identical for every checkpoint and every grid. Each query text is synthesised free-running (predicted durations), vocoded with
Griffin-Lim and scored against the recording: MCD-DTW, F0 RMSE and V/UV error (on the DTW path),
PESQ and STOI (whose signals are not time-aligned here, so they measure more than voice quality;
read them together with the vocoder-ceiling row), and, when ``fewshot.speaker_encoder`` names an
evaluation encoder checkpoint (a ``metric`` run trained apart from the models under test, e.g. with
``conf/learner/speaker_encoder.yaml``), speaker similarity ``speaker_sim``: the cosine between the
encoder's embeddings of the recording and the synthesis. Two reference rows: ground truth (the recording
against itself: each metric's best value) and the vocoder ceiling (ground-truth mel -> Griffin-Lim).

Outputs in ``out``: ``results.json`` (every value, mean and 95 % CI per cell, seeds, config,
checkpoint hashes), ``results.csv``, ``results.md`` and ``adaptation_curves.png``.
"""
from __future__ import annotations

import csv
import io
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from lightning_tts.adaptation import file_sha256
from lightning_tts.atomic import write_json, write_text
from lightning_tts.audio import FeatureExtractor, read_audio, resample
from lightning_tts.config import to_container
from lightning_tts.data.corpora import Utterance
from lightning_tts.data.tasks import UtteranceBatch, collate_utterances
from lightning_tts.errors import DataError, LightningTTSError
from lightning_tts.learners import load_learner
from lightning_tts.learners.base import BaseLearner
from lightning_tts.metrics import cosine_similarity, f0_errors, mcd_from_mcep, mel_cepstrum, pesq_score, stoi_score
from lightning_tts.models.vocoder import GriffinLimVocoder
from lightning_tts.plots import adaptation_curves_figure, save_figure

METRICS = ("mcd", "pesq", "stoi", "f0_rmse", "vuv_error", "speaker_sim")
LOWER_IS_BETTER = {"mcd": True, "pesq": False, "stoi": False, "f0_rmse": True, "vuv_error": True, "speaker_sim": False}
Embedder = Callable[[torch.Tensor], torch.Tensor]  # waveform (N,) -> (D,) speaker embedding


def speaker_embedder(checkpoint: str | Path, sample_rate: int) -> Embedder:
    """The speaker-embedding function of an evaluation encoder checkpoint, for waveforms at ``sample_rate``.

    Raises:
        LightningTTSError: the checkpoint has no speaker encoder.
    """
    encoder = load_learner(checkpoint)
    if not encoder.has_speaker_encoder:
        raise LightningTTSError(f"fewshot.speaker_encoder {checkpoint} is a {encoder.name} checkpoint; it must be a "
                                f"metric run (e.g. --config conf/learner/speaker_encoder.yaml)")
    extractor = FeatureExtractor(encoder.feature_params)
    own_rate = encoder.feature_params.sample_rate

    @torch.no_grad()
    def embed(wav: torch.Tensor) -> torch.Tensor:
        mel = extractor(resample(wav, sample_rate, own_rate))["mel"]  # (T, n_mels)
        return encoder.embed_utterances(mel[None], torch.tensor([len(mel)]))[0]

    return embed


@dataclass
class SpeakerSet:
    """A test speaker's fixed support pool and query set."""

    speaker: str
    support: list[Utterance]
    query: list[Utterance]


def fixed_speaker_sets(utterances: Sequence[Utterance], speakers: Sequence[str], pool: int, queries: int,
                       seed: int) -> list[SpeakerSet]:
    """Per speaker (sorted): a seeded permutation whose first ``queries`` items are the query set and the
    next ``pool`` the support pool, so the query set does not depend on how many shots are asked for.

    Raises:
        DataError: no speaker has ``pool + queries`` utterances.
    """
    by_speaker: dict[str, list[Utterance]] = {}
    for utt in utterances:
        by_speaker.setdefault(utt.speaker, []).append(utt)
    sets = []
    for speaker in sorted(speakers):
        utts = by_speaker.get(speaker, [])
        if len(utts) < pool + queries:
            continue
        order = np.random.default_rng([seed, zlib.crc32(speaker.encode())]).permutation(len(utts))
        chosen = [utts[i] for i in order]
        sets.append(SpeakerSet(speaker, support=chosen[queries: queries + pool], query=chosen[:queries]))
    if not sets:
        raise DataError(f"no test speaker has {pool} support + {queries} query utterances "
                        f"(lower --shots or data.tasks.queries)")
    return sets


def support_batch(utts: Sequence[Utterance], waves: Sequence[torch.Tensor], learner: BaseLearner,
                  extractor: FeatureExtractor) -> UtteranceBatch:
    """A padded batch of utterances (features computed from their waveforms) for ``learner.adapt``."""
    items = [{"tokens": torch.tensor(learner.text.encode(u.text)), "mel": extractor(wav)["mel"], "speaker_id": -1,
              "speaker": u.speaker, "utterance_id": u.utterance_id} for u, wav in zip(utts, waves)]
    return collate_utterances(items)


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95 % confidence half-width (normal approximation) of the finite values."""
    finite = [v for v in values if math.isfinite(v)]
    n = len(finite)
    mean = float(np.mean(finite)) if n else float("nan")
    ci = float(1.96 * np.std(finite, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "ci95": ci, "n": n, "failures": len(values) - n, "values": [float(v) for v in values]}


def score_pair(ref: torch.Tensor, syn: torch.Tensor, sample_rate: int,
               embed: Optional[Embedder] = None) -> dict[str, float]:
    """Every metric of one (recording, synthesis) pair (mel-cepstra and DTW computed once);
    ``speaker_sim`` only with an evaluation encoder's ``embed``."""
    mcd_value, path = mcd_from_mcep(mel_cepstrum(ref.double().numpy(), sample_rate),
                                    mel_cepstrum(syn.double().numpy(), sample_rate))
    f0_rmse, vuv = f0_errors(ref, syn, sample_rate, path)
    scores = {"mcd": mcd_value, "pesq": pesq_score(ref, syn, sample_rate),
              "stoi": stoi_score(ref, syn, sample_rate), "f0_rmse": f0_rmse, "vuv_error": vuv}
    if embed is not None:
        scores["speaker_sim"] = float(cosine_similarity(embed(ref), embed(syn)))
    return scores


class Evaluator:
    """Runs the grid; one instance per evaluation.

    Args:
        sets: the fixed per-speaker support/query sets.
        sample_rate: the feature sample rate (all checkpoints must share it).
        griffin_lim_iters: vocoder iterations.
        progress: called with a short description after each scored cell.
        embed: the evaluation encoder's embedding function (adds ``speaker_sim``).
    """

    def __init__(self, sets: list[SpeakerSet], sample_rate: int, griffin_lim_iters: int = 32,
                 progress: Optional[Callable[[str], None]] = None, embed: Optional[Embedder] = None) -> None:
        self.sets, self.sample_rate, self.iters, self.embed = sets, sample_rate, griffin_lim_iters, embed
        self.metrics = [m for m in METRICS if m != "speaker_sim" or embed is not None]
        self.progress = progress or (lambda _: None)
        self._audio: dict[str, torch.Tensor] = {}

    def recording(self, utt: Utterance) -> torch.Tensor:
        """The reference waveform at the evaluation sample rate (cached)."""
        if utt.utterance_id not in self._audio:
            self._audio[utt.utterance_id] = read_audio(utt.path, self.sample_rate)
        return self._audio[utt.utterance_id]

    def reference_rows(self, learner: BaseLearner) -> list[dict[str, Any]]:
        """Ground truth (recording vs itself) and vocoder ceiling (ground-truth mel -> Griffin-Lim)."""
        extractor = FeatureExtractor(learner.feature_params)
        vocoder = GriffinLimVocoder(learner.feature_params, self.iters)
        rows = []
        for system, make in (("ground truth", lambda wav: wav),
                             ("vocoder ceiling", lambda wav: vocoder(extractor(wav)["mel"]))):
            scores = [score_pair(self.recording(u), make(self.recording(u)), self.sample_rate, self.embed)
                      for s in self.sets for u in s.query]
            rows.append(self._row(system, None, None, scores))
            self.progress(system)
        return rows

    def checkpoint_rows(self, system: str, learner: BaseLearner, shots: Sequence[int],
                        steps: Sequence[int]) -> list[dict[str, Any]]:
        """One row per (shots, steps) for a learner."""
        extractor = FeatureExtractor(learner.feature_params)
        vocoder = GriffinLimVocoder(learner.feature_params, self.iters)
        rows = []
        for k in shots:
            supports = [self._support_batch(s.support[:k], learner, extractor) for s in self.sets]
            for n_steps in steps:
                scores = []
                for speaker_set, support in zip(self.sets, supports):
                    state = learner.adapt(support, steps=n_steps)
                    for utt in speaker_set.query:
                        tokens = torch.tensor(learner.text.encode(utt.text))
                        wav = vocoder(learner.synthesize(tokens, state))
                        scores.append(score_pair(self.recording(utt), wav, self.sample_rate, self.embed))
                rows.append(self._row(system, k, n_steps, scores))
                self.progress(f"{system} K={k} steps={n_steps}")
        return rows

    def _support_batch(self, utts: list[Utterance], learner: BaseLearner, extractor: FeatureExtractor) -> UtteranceBatch:
        return support_batch(utts, [self.recording(u) for u in utts], learner, extractor)

    def _row(self, system: str, shots: Optional[int], steps: Optional[int], scores: list[dict[str, float]]) -> dict[str, Any]:
        return {"system": system, "shots": shots, "steps": steps,
                "metrics": {m: mean_ci([s[m] for s in scores]) for m in self.metrics}}


def system_names(checkpoints: Sequence[str], learners: Sequence[BaseLearner]) -> list[str]:
    """'learner (run directory)' per checkpoint, unique."""
    names = [f"{l.name} ({Path(c).resolve().parent.parent.name})" for c, l in zip(checkpoints, learners)]
    return [n if names.count(n) == 1 else f"{n} #{i + 1}" for i, n in enumerate(names)]


def run_evaluation(cfg: DictConfig, checkpoints: Sequence[str], shots: Sequence[int], steps: Sequence[int],
                   out: str | Path, progress: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Evaluate checkpoints over the shots x steps grid on the configured test speakers; write the outputs.

    Raises:
        DataError / LightningTTSError: unusable data, checkpoints or grid.
    """
    from lightning_tts.training import build_datamodule, check_compatible

    if not checkpoints:
        raise DataError("evaluate needs at least one --checkpoint")
    if not shots or min(shots) < 1 or not steps or min(steps) < 0:
        raise DataError(f"--shots must be >= 1 and --steps >= 0, got shots={list(shots)} steps={list(steps)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    learners = [load_learner(c) for c in checkpoints]
    for learner in learners:
        check_compatible(learner, cfg)
    dm = build_datamodule(cfg, "episodic", progress=False)
    sets = fixed_speaker_sets(dm.index.utterances, dm.split.test, max(shots), cfg.data.tasks.queries,
                              cfg.data.splits.seed)
    torch.manual_seed(cfg.seed)
    sample_rate = learners[0].feature_params.sample_rate
    encoder = cfg.fewshot.speaker_encoder
    embed = speaker_embedder(encoder, sample_rate) if encoder else None
    if encoder and file_sha256(encoder) in {file_sha256(c) for c in checkpoints}:
        raise LightningTTSError(f"fewshot.speaker_encoder {encoder} is also a checkpoint under evaluation: "
                                f"a model must not be graded by its own encoder")
    evaluator = Evaluator(sets, sample_rate, progress=progress, embed=embed)
    rows = evaluator.reference_rows(learners[0])
    for name, learner in zip(system_names(checkpoints, learners), learners):
        rows += evaluator.checkpoint_rows(name, learner, shots, steps)
    results = {
        "seed": cfg.seed, "split_seed": cfg.data.splits.seed, "shots": list(shots), "steps": list(steps),
        "speakers": {s.speaker: {"support": [u.utterance_id for u in s.support],
                                 "query": [u.utterance_id for u in s.query]} for s in sets},
        "checkpoints": [{"path": str(Path(c).resolve()), "sha256": file_sha256(c), "learner": l.name, "system": n}
                        for c, l, n in zip(checkpoints, learners, system_names(checkpoints, learners))],
        "speaker_encoder": {"path": str(Path(encoder).resolve()), "sha256": file_sha256(encoder)} if encoder else None,
        "metrics": evaluator.metrics, "config": to_container(cfg), "rows": rows,
    }
    write_json(out / "results.json", results)
    write_text(out / "results.csv", results_csv(rows))
    write_text(out / "results.md", results_markdown(results))
    save_figure(adaptation_curves_figure(results, evaluator.metrics, LOWER_IS_BETTER), out / "adaptation_curves.png")
    return results


def results_csv(rows: list[dict[str, Any]]) -> str:
    """One line per (system, shots, steps, metric)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["system", "shots", "steps", "metric", "mean", "ci95", "n", "failures"])
    for row in rows:
        for metric, cell in row["metrics"].items():
            writer.writerow([row["system"], row["shots"], row["steps"], metric, f"{cell['mean']:.4f}",
                             f"{cell['ci95']:.4f}", cell["n"], cell["failures"]])
    return buf.getvalue()


def results_markdown(results: dict[str, Any]) -> str:
    """One table per metric: rows = (shots, steps), columns = systems; mean ± 95 % CI."""
    rows = results["rows"]
    systems = list(dict.fromkeys(r["system"] for r in rows if r["shots"] is not None))
    refs = [r for r in rows if r["shots"] is None]
    lines = [f"# Few-shot evaluation: {len(results['speakers'])} test speakers, "
             f"{len(next(iter(results['speakers'].values()))['query'])} query utterances each", ""]
    for metric in results_metrics(results):
        arrow = "lower is better" if LOWER_IS_BETTER[metric] else "higher is better"
        lines += [f"## {metric} ({arrow})", "", "| shots | steps | " + " | ".join(systems) + " |",
                  "|---|---|" + "---|" * len(systems)]
        for k in results["shots"]:
            for n in results["steps"]:
                cells = []
                for system in systems:
                    cell = next(r for r in rows if r["system"] == system and r["shots"] == k and r["steps"] == n)
                    cells.append(_fmt(cell["metrics"][metric]))
                lines.append(f"| {k} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += [f"{r['system']}: {_fmt(r['metrics'][metric])}  " for r in refs] + [""]
    return "\n".join(lines)


def results_metrics(results: dict[str, Any]) -> list[str]:
    """The metrics a results file holds (files older than speaker similarity lack the key)."""
    return list(results.get("metrics", [m for m in METRICS if m in results["rows"][0]["metrics"]]))


def _fmt(cell: dict[str, Any]) -> str:
    text = f"{cell['mean']:.3f} ± {cell['ci95']:.3f}" if math.isfinite(cell["ci95"]) else f"{cell['mean']:.3f}"
    return text + (f" ({cell['failures']} failed)" if cell["failures"] else "")
