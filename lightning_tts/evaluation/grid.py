"""The few-shot grid: every checkpoint x shots x adaptation steps on the test speakers.

For each test speaker a seeded permutation of its utterances gives a fixed query set (the first
``data.tasks.queries``) and a support pool (the next ``max(shots)``; K shots use the first K),
identical for every checkpoint and every grid. Each query text is synthesised free-running (predicted
durations), vocoded by the configured vocoder (``vocoder`` section) and scored against the recording
by ``scoring.score_pair``: MCD-DTW, F0 RMSE and V/UV error (on the DTW path), PESQ and STOI (whose
signals are not time-aligned here, so they measure more than voice quality; read them together with
the vocoder-ceiling row), and speaker similarity ``speaker_sim``: the cosine between the judge's
embeddings of the recording and the synthesis; the judge is ``fewshot.speaker_encoder``
(``judges.build_judge``): ``resemblyzer`` by default, an evaluation encoder checkpoint (a ``metric``
run trained apart from the models under test), or ``none`` (no ``speaker_sim``).
With ``fewshot.wer`` (the default) an offline recogniser (``recognizer.py``) transcribes every clip and
``wer``/``cer`` score it against the query text; the ground-truth row's WER is the recordings' own
(the recogniser is weak: read a system's WER against it).
Two reference rows: ground truth (the recording against itself: each metric's best value) and the
vocoder ceiling (ground-truth mel -> vocoder). The audio of the first ``samples`` queries per speaker is
kept (``samples.SampleWriter``) for the listening page ``report.html``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from omegaconf import DictConfig

from lightning_tts.atomic import file_sha256, require_parent
from lightning_tts.audio import FeatureExtractor, FeatureParams, read_audio
from lightning_tts.data.corpora import Utterance
from lightning_tts.data.datamodule import build_datamodule
from lightning_tts.data.plans import TaskBatches
from lightning_tts.devices import resolve_device
from lightning_tts.errors import DataError, LightningTTSError
from lightning_tts.evaluation.judges import NO_JUDGE, Embedder, build_judge, judge_checkpoint, judge_kind, judge_record
from lightning_tts.evaluation.parallel import grid_workers, merge_rows, order_entries, report_progress, run_in_processes, split_evenly
from lightning_tts.evaluation.recognizer import RECOGNIZER, Transcriber, transcriber
from lightning_tts.evaluation.report import CEILING, write_report
from lightning_tts.evaluation.samples import SampleWriter
from lightning_tts.evaluation.scoring import METRICS, metric_names, score_pair, similarity_to
from lightning_tts.evaluation.speaker_sets import SpeakerSet, fixed_speaker_sets, support_batch
from lightning_tts.evaluation.stats import Rate, mean_ci, paired_bootstrap, paired_bootstrap_runs, rate_at
from lightning_tts.learners import load_learner
from lightning_tts.learners.base import BaseLearner
from lightning_tts.models.vocoder import VocoderConfig, build_vocoder
from lightning_tts.provenance import provenance
from lightning_tts.schema import build, to_container

#: Receives every synthesis (and reference clip) of the grid: (speaker, query, system, shots, steps, (T,) wav);
#: shots and steps are None for the reference rows.
SampleHook = Callable[[str, Utterance, str, Optional[int], Optional[int], torch.Tensor], None]


class Evaluator:
    """Runs the grid; one instance per evaluation.

    Args:
        sets: the fixed per-speaker support/query sets.
        sample_rate: the feature sample rate (all checkpoints must share it).
        vocoder: which vocoder makes the audio.
        progress: called with a short description after each scored cell.
        embed: the judge's embedding function (adds ``speaker_sim``).
        transcribe: a recogniser (adds ``wer`` and ``cer`` against each query's text).
        keep: called with every clip before it is scored (``SampleHook``), e.g. to write samples.
        only: score only these metrics (default: every metric the judge and recogniser allow).
    """

    def __init__(self, sets: list[SpeakerSet], sample_rate: int, vocoder: VocoderConfig,
                 progress: Optional[Callable[[str], None]] = None, embed: Optional[Embedder] = None,
                 keep: Optional[SampleHook] = None, transcribe: Optional[Transcriber] = None,
                 only: Optional[Sequence[str]] = None) -> None:
        self.sets, self.sample_rate, self.vocoder, self.embed = sets, sample_rate, vocoder, embed
        self.transcribe = transcribe
        self.metrics = metric_names(embed is not None, transcribe is not None, only)
        self.progress = progress or (lambda _: None)
        self.keep = keep or (lambda *_: None)
        self._audio: dict[str, torch.Tensor] = {}
        self._embeddings: dict[str, torch.Tensor] = {}

    def recording(self, utt: Utterance) -> torch.Tensor:
        """The reference waveform at the evaluation sample rate (cached)."""
        if utt.utterance_id not in self._audio:
            self._audio[utt.utterance_id] = read_audio(utt.path, self.sample_rate)
        return self._audio[utt.utterance_id]

    def score(self, utt: Utterance, syn: torch.Tensor) -> dict[str, float]:
        """Every metric of a synthesis (or reference row) against ``utt``'s recording; the
        recording's judge embedding is computed once per utterance."""
        ref = self.recording(utt)
        similarity = None
        if self.embed is not None and "speaker_sim" in self.metrics:  # not selected: no embedding at all
            if utt.utterance_id not in self._embeddings:
                self._embeddings[utt.utterance_id] = self.embed(ref)
            similarity = similarity_to(self._embeddings[utt.utterance_id], self.embed)
        return score_pair(ref, syn, self.sample_rate, similarity, utt.text, self.transcribe, self.metrics)

    def reference_rows(self, features: FeatureParams) -> list[dict[str, Any]]:
        """Ground truth (recording vs itself) and vocoder ceiling (ground-truth mel -> vocoder)."""
        extractor = FeatureExtractor(features)
        vocoder = build_vocoder(self.vocoder, features)
        rows = []
        for system, make in (("ground truth", lambda wavs: wavs),
                             (CEILING, lambda wavs: vocoder.batch([extractor(w)["mel"] for w in wavs]))):
            scores = []
            for s in self.sets:
                for u, wav in zip(s.query, make([self.recording(u) for u in s.query])):
                    scores.append(self.score(u, self._kept(s.speaker, u, system, None, None, wav)))
            rows.append(self._row(system, None, None, scores))
            self.progress(system)
        return rows

    def checkpoint_rows(self, system: str, learner: BaseLearner, shots: Sequence[int], steps: Sequence[int],
                        adapt_lr: Rate = None) -> list[dict[str, Any]]:
        """One row per (shots, steps) for a learner adapting with ``adapt_lr`` (None: its own rate; a
        mapping: one per step count)."""
        extractor = FeatureExtractor(learner.feature_params)
        vocoder = build_vocoder(self.vocoder, learner.feature_params)
        rows = []
        for k in shots:
            supports = [support_batch(s.support[:k], [self.recording(u) for u in s.support[:k]], learner.text,
                                      extractor).to(learner.device) for s in self.sets]
            for n_steps in steps:
                scores = []
                for speaker_set, support in zip(self.sets, supports):
                    state = learner.adapt(support, steps=n_steps, lr=rate_at(adapt_lr, n_steps))
                    mels = [learner.synthesize(torch.tensor(learner.text.encode(u.text)), state).cpu()
                            for u in speaker_set.query]  # each (T, n_mels)
                    for utt, wav in zip(speaker_set.query, vocoder.batch(mels)):
                        scores.append(self.score(utt, self._kept(speaker_set.speaker, utt, system, k, n_steps, wav)))
                rows.append(self._row(system, k, n_steps, scores))
                self.progress(f"{system} K={k} steps={n_steps}")
        return rows

    def _kept(self, speaker: str, utt: Utterance, system: str, shots: Optional[int], steps: Optional[int],
              wav: torch.Tensor) -> torch.Tensor:
        """Hand a (T,) clip to the sample hook; returns it unchanged."""
        self.keep(speaker, utt, system, shots, steps, wav)
        return wav

    def _row(self, system: str, shots: Optional[int], steps: Optional[int], scores: list[dict[str, float]]) -> dict[str, Any]:
        return {"system": system, "shots": shots, "steps": steps,
                "metrics": {m: mean_ci([s[m] for s in scores]) for m in self.metrics}}


def load_learners(checkpoints: Sequence[str], device: str | torch.device,
                  adapt_options: Optional[Mapping[str, Any]] = None) -> list[BaseLearner]:
    """The checkpoints' learners on ``device``, each adapting with ``adapt_options`` when given."""
    learners = [load_learner(c).to(device) for c in checkpoints]
    if adapt_options:
        for learner in learners:
            learner.set_adaptation(adapt_options)
    return learners


@dataclass(frozen=True)
class GridPart:
    """The whole grid on some of the speakers: what one process scores (picklable, to cross to a worker
    process). Fields as ``run_evaluation``'s arguments; ``judge`` is the judge spec (None: no
    ``speaker_sim``), ``wer`` whether the recogniser scores, ``device`` where models run."""

    checkpoints: tuple[str, ...]
    names: tuple[str, ...]
    adapt_lrs: tuple[Rate, ...]
    adapt_options: dict[str, Any]
    sets: tuple[SpeakerSet, ...]
    shots: tuple[int, ...]
    steps: tuple[int, ...]
    vocoder: VocoderConfig
    judge: Optional[str]
    wer: bool
    metrics: Optional[tuple[str, ...]]
    references: bool
    samples: int
    out: Path
    device: str
    seed: int


def score_part(part: GridPart, learners: Optional[Sequence[BaseLearner]] = None, embed: Optional[Embedder] = None,
               progress: Optional[Callable[[str], None]] = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Score ``part`` in this process with ``learners`` and the judge ``embed`` (defaults: loaded from its
    checkpoints and judge spec): the rows (reference rows first when asked), the sample entries written
    under ``part.out``, and the metrics scored. ``progress`` (default: ``parallel.report_progress``, a
    no-op outside a worker process) hears each finished cell."""
    if learners is None:
        learners = load_learners(part.checkpoints, part.device, part.adapt_options)
    torch.manual_seed(part.seed)
    sets, features = list(part.sets), learners[0].feature_params
    writer = SampleWriter(part.out, sets, part.samples, features)
    evaluator = Evaluator(sets, features.sample_rate, part.vocoder, progress=progress or report_progress,
                          embed=embed if embed is not None else build_judge(part.judge, features.sample_rate), keep=writer,
                          transcribe=transcriber(features.sample_rate) if part.wer else None, only=part.metrics)
    rows = evaluator.reference_rows(features) if part.references else []
    for name, learner, lr in zip(part.names, learners, part.adapt_lrs):
        rows += evaluator.checkpoint_rows(name, learner, part.shots, part.steps, lr)
    return rows, writer.entries, evaluator.metrics


def query_clusters(speakers: Mapping[str, Mapping[str, Sequence[str]]]) -> list[str]:
    """The speaker of every query, in grid order, from ``results.json``'s ``speakers`` (speaker ->
    ``support``/``query`` utterance ids): the clusters of the paired bootstrap."""
    return [speaker for speaker, chosen in speakers.items() for _ in chosen["query"]]


def runs_of(cell: Mapping[str, Any]) -> list[list[float]]:
    """(runs, queries) scores of a metric cell: its pooled runs' (``runs``), or its own values as one run."""
    return cell.get("runs") or [cell["values"]]


def paired_differences(rows: list[dict[str, Any]], clusters: Sequence[str], metrics: Sequence[str],
                       seed: int, reference: Optional[str] = None) -> list[dict[str, Any]]:
    """Every system against ``reference`` (default: the first system of ``rows``), cell by cell (same K,
    same steps): the mean paired difference (other - reference) per metric with a speaker-clustered
    bootstrap 95 % CI (``stats.paired_bootstrap_runs``; every cell scores the same queries in the same order,
    ``clusters`` giving each query's speaker; a cell that pools runs — ``runs``, as ``compare`` pools them —
    has its runs resampled too). A cell the reference lacks is left out."""
    grid = [r for r in rows if r["shots"] is not None]
    systems = list(dict.fromkeys(r["system"] for r in grid))
    reference = systems[0] if reference is None else reference
    out = []
    for row in grid:
        first = next((r for r in grid if r["system"] == reference and (r["shots"], r["steps"]) == (row["shots"], row["steps"])),
                     None)
        if row["system"] == reference or first is None:
            continue
        for metric in metrics:
            diff = paired_bootstrap_runs(runs_of(first["metrics"][metric]), runs_of(row["metrics"][metric]), clusters,
                                         seed=seed)
            out.append({"system": row["system"], "against": reference, "shots": row["shots"], "steps": row["steps"],
                        "metric": metric, **diff})
    return out


def intelligibility(rows: list[dict[str, Any]], clusters: Sequence[str], seed: int) -> list[dict[str, Any]]:
    """Word error rate of every adapted cell against two references, paired on the same queries with a
    speaker-clustered bootstrap 95 % CI (``stats.paired_bootstrap``): ``against="0 steps"``, the same
    system and K unadapted (the rise with adaptation); ``against="vocoder ceiling"``, the speaker's own
    recordings through the same vocoder (a faithful clone scores about 0 here, while its rise over a
    mean voice the recogniser reads more easily can be well above 0). Empty without ``wer`` scores.
    """
    refs = {r["system"]: r for r in rows if r["shots"] is None}
    grid = [r for r in rows if r["shots"] is not None and "wer" in r["metrics"]]
    out = []
    for row in grid:
        if row["steps"] == 0:
            continue
        start = next((r for r in grid if r["system"] == row["system"] and r["shots"] == row["shots"] and r["steps"] == 0),
                     None)
        for against, ref in (("0 steps", start), (CEILING, refs.get(CEILING))):
            if ref is None or "wer" not in ref["metrics"]:
                continue
            diff = paired_bootstrap(ref["metrics"]["wer"]["values"], row["metrics"]["wer"]["values"], clusters, seed=seed)
            out.append({"system": row["system"], "shots": row["shots"], "steps": row["steps"], "against": against,
                        "metric": "wer", **diff})
    return out


def system_names(checkpoints: Sequence[str], learners: Sequence[BaseLearner]) -> list[str]:
    """'learner (run directory)' per checkpoint, unique."""
    names = [f"{l.name} ({Path(c).resolve().parent.parent.name})" for c, l in zip(checkpoints, learners)]
    return [n if names.count(n) == 1 else f"{n} #{i + 1}" for i, n in enumerate(names)]


def refuse_training_speakers(checkpoints: Sequence[str], learners: Sequence[BaseLearner], speakers: Sequence[str],
                             split: str) -> None:
    """Few-shot scores mean something only on unseen voices: refuse evaluated speakers that a checkpoint
    trained on (its ``speakers``, which every learner records), whatever the split settings say.

    Raises:
        DataError: one line naming the checkpoint and the speakers.
    """
    for checkpoint, learner in zip(checkpoints, learners):
        seen = sorted(set(speakers) & set(learner.speakers))
        if seen:
            raise DataError(f"{checkpoint} was trained on {len(seen)} of the {split} speakers ({', '.join(seen[:5])}"
                            f"{' ...' if len(seen) > 5 else ''}): evaluate on speakers it has not seen "
                            f"(data.splits.{split}_speakers or data.splits.seed as in its training run)")


def check_metric_names(metrics: Sequence[str]) -> None:
    """Refuse a metric selection that names no metric or an unknown one (any run config).

    Raises:
        DataError: naming the metric.
    """
    if not metrics:
        raise DataError("a metric selection needs at least one metric")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise DataError(f"unknown metric {unknown[0]!r}: one of {', '.join(METRICS)}")


def check_metrics(metrics: Sequence[str], cfg: DictConfig) -> None:
    """Refuse a metric selection that names no metric, an unknown one, or one the run config turns
    off (``speaker_sim`` without a judge, ``wer``/``cer`` with ``fewshot.wer=false``).

    Raises:
        DataError: naming the metric.
    """
    check_metric_names(metrics)
    if "speaker_sim" in metrics and judge_kind(cfg.fewshot.speaker_encoder) == NO_JUDGE:
        raise DataError("metric speaker_sim needs a judge, but fewshot.speaker_encoder is none")
    if {"wer", "cer"} & set(metrics) and not cfg.fewshot.wer:
        raise DataError("metrics wer and cer need the recogniser, but fewshot.wer=false")


def run_evaluation(cfg: DictConfig, checkpoints: Sequence[str], shots: Sequence[int], steps: Sequence[int],
                   out: str | Path, progress: Optional[Callable[[str], None]] = None,
                   device: str | torch.device = "cpu", samples: int = 2, split: str = "test",
                   adapt_lrs: Optional[Sequence[Rate]] = None,
                   names: Optional[Sequence[str]] = None,
                   adapt_options: Optional[Mapping[str, Any]] = None,
                   metrics: Optional[Sequence[str]] = None, references: bool = True) -> dict[str, Any]:
    """Evaluate checkpoints over the shots x steps grid on the ``split`` speakers (``test``; ``val`` to
    choose adaptation settings without touching the test speakers), checkpoint i adapting with
    ``adapt_lrs[i]`` (None, or no list: the learner's own rate; a mapping: one rate per step count of
    ``steps``), every checkpoint's adaptation options (``learners.base.ADAPTATION_OPTIONS``) replaced
    by ``adapt_options`` (recorded in ``results.json``), and named ``names[i]`` in the
    tables (default: ``system_names``), scoring only ``metrics`` when given (no judge is loaded
    without ``speaker_sim``, no recogniser without ``wer``/``cer``) and, with ``references``, the ground
    truth and vocoder-ceiling rows (False: the checkpoints' rows only, as tuning needs); write the
    report files (``report.REPORT_FILES``) into ``out`` (created; its parent must exist), and the audio
    of the first ``samples`` queries per speaker under ``out/samples/`` (0: none). Models
    adapt and synthesise on ``device`` (``auto``: CUDA when present); scoring runs on the CPU. With
    ``fewshot.workers`` other than 1 the speakers are shared among spawned worker processes of one torch
    thread each (``parallel``; the results are the same for any number of them): a script that calls
    this then needs the ``if __name__ == "__main__":`` guard that spawned processes need.

    Raises:
        DataError / LightningTTSError: unusable data, checkpoints or grid.
    """
    out = require_parent(out, "create")
    if not checkpoints:
        raise DataError("evaluate needs at least one --checkpoint")
    if not shots or min(shots) < 1 or not steps or min(steps) < 0:
        raise DataError(f"--shots must be >= 1 and --steps >= 0, got shots={list(shots)} steps={list(steps)}")
    if samples < 0:
        raise DataError(f"--samples must be >= 0, got {samples}")
    if split not in ("test", "val"):
        raise DataError(f"--split must be test or val, got {split!r}")
    adapt_lrs = list(adapt_lrs) if adapt_lrs is not None else [None] * len(checkpoints)
    if len(adapt_lrs) != len(checkpoints) or (names is not None and len(names) != len(checkpoints)):
        raise DataError(f"{len(checkpoints)} checkpoints need as many adaptation rates and names, got "
                        f"{len(adapt_lrs)} rates and {len(names) if names is not None else 'default'} names")
    if any(isinstance(lr, Mapping) and set(lr) != set(steps) for lr in adapt_lrs):
        raise DataError(f"a per-step-count adaptation rate needs one rate for each of steps={list(steps)}")
    every = [r for lr in adapt_lrs for r in (lr.values() if isinstance(lr, Mapping) else [lr])]
    bad = [lr for lr in every if lr is not None and not lr > 0]
    if bad:
        raise DataError(f"--adapt-lr must be > 0, got {bad[0]}")
    if metrics is not None:
        check_metrics(metrics, cfg)
    if names is not None and len(set(names)) != len(names):
        raise DataError(f"system names must be unique, got {list(names)}")
    workers = grid_workers(cfg.fewshot.workers)
    out.mkdir(exist_ok=True)
    device = resolve_device(device)
    learners = load_learners(checkpoints, device, adapt_options)
    features = FeatureParams.from_config(cfg.features)
    for learner in learners:
        learner.check_features(features)
    dm = build_datamodule(cfg, TaskBatches(), progress=False)
    sets = fixed_speaker_sets(dm.index.utterances, getattr(dm.split, split), max(shots), cfg.data.tasks.queries,
                              cfg.data.splits.seed)
    refuse_training_speakers(checkpoints, learners, [s.speaker for s in sets], split)
    judge = cfg.fewshot.speaker_encoder if metrics is None or "speaker_sim" in metrics else None
    embed = build_judge(judge, learners[0].feature_params.sample_rate)  # a bad judge fails here, before any scoring
    encoder = judge_checkpoint(judge)
    if encoder is not None and file_sha256(encoder) in {file_sha256(c) for c in checkpoints}:
        raise LightningTTSError(f"fewshot.speaker_encoder {encoder} is also a checkpoint under evaluation: "
                                f"a model must not be graded by its own encoder")
    names = list(names) if names is not None else system_names(checkpoints, learners)
    part = GridPart(checkpoints=tuple(str(c) for c in checkpoints), names=tuple(names), adapt_lrs=tuple(adapt_lrs),
                    adapt_options=dict(adapt_options or {}), sets=tuple(sets), shots=tuple(shots), steps=tuple(steps),
                    vocoder=build(VocoderConfig, cfg.vocoder), judge=judge,
                    wer=bool(cfg.fewshot.wer) and (metrics is None or bool({"wer", "cer"} & set(metrics))),
                    metrics=tuple(metrics) if metrics is not None else None, references=references, samples=samples,
                    out=out, device=str(device), seed=int(cfg.seed))
    workers = min(workers, len(sets))
    if workers == 1:
        rows, entries, scored = score_part(part, learners, embed, progress)
    else:
        groups = [replace(part, sets=tuple(group)) for group in split_evenly(sets, workers)]
        parts = run_in_processes(score_part, groups, progress)
        rows = merge_rows([rows for rows, _, _ in parts])
        entries = order_entries([e for _, group_entries, _ in parts for e in group_entries], rows,
                                [s.speaker for s in sets])
        scored = parts[0][2]
    speakers = {s.speaker: {"support": [u.utterance_id for u in s.support], "query": [u.utterance_id for u in s.query]}
                for s in sets}
    clusters = query_clusters(speakers)
    results = {
        "seed": cfg.seed, "split_seed": cfg.data.splits.seed, "split": split, "device": str(device),
        "shots": list(shots), "steps": list(steps), "speakers": speakers,
        "checkpoints": [{"path": str(Path(c).resolve()), "sha256": file_sha256(c), "learner": l.name, "system": n,
                         "adapt_lr": {str(k): v for k, v in lr.items()} if isinstance(lr, Mapping) else lr,
                         "training_cost": l.training_cost, "adapt_options": dict(adapt_options or {})}
                        for c, l, n, lr in zip(checkpoints, learners, names, adapt_lrs)],
        "speaker_encoder": judge_record(judge),
        "metrics": scored, "config": to_container(cfg), "rows": rows, "provenance": provenance(),
        "differences": paired_differences(rows, clusters, scored, cfg.seed),
        "intelligibility": intelligibility(rows, clusters, cfg.seed),
        "recognizer": RECOGNIZER if part.wer else None,
        "samples": entries,
    }
    write_report(results, out)
    return results
