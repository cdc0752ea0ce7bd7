"""The command line: ``python -m lightning_tts COMMAND [--config FILE]... [dotted.key=value]...``.

Every command that takes a configuration merges ``conf/default.yaml``, then each ``--config`` file,
then the overrides (see ``lightning_tts.config``). Errors caused by input are printed as one line
(``error: ...``) with a non-zero exit code; ``--debug`` shows the traceback instead. Each handler
parses its arguments, calls one library function and prints; the library is imported inside the
handlers so that ``--help`` starts without loading torch.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from lightning_tts.errors import ConfigError, DataError, LightningTTSError

log = logging.getLogger("lightning_tts")


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, its own arguments, whether it reads a config, and its handler."""

    help: str
    handler: Callable[[argparse.Namespace, Optional[DictConfig]], int]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None
    uses_config: bool = True


def _preprocess_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verify", action="store_true",
                   help="hash every audio file and re-read every feature file: catches audio replaced under the "
                        "same size and modification time (slow: reads the whole corpus)")


def _preprocess(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
    """Bring the feature cache in step with the corpus; write the index and the skip report."""
    from lightning_tts.audio import FeatureParams
    from lightning_tts.data.cache import preprocess

    assert cfg is not None
    cache, index = preprocess(cfg.data, FeatureParams.from_config(cfg.features), phonemes=cfg.text.phonemes,
                              progress=not args.no_progress, verify=args.verify)
    print(index.summary())
    assert index.changes is not None
    print(index.changes.describe())
    print(f"features: {cache.directory}")
    print(f"skip report: {cache.directory / 'report.json'}")
    return 0


def _synthetic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="corpus root to create (VCTK-0.92 layout)")
    p.add_argument("--engine", choices=("procedural", "espeak"), default="procedural",
                   help="procedural: the formant synthesiser (the default corpus); espeak: English sentences "
                        'spoken by eSpeak NG voices (pip install "lightning_tts[espeak]")')
    defaults = "(default: the engine's config, data.synthetic or data.espeak of the default run)"
    p.add_argument("--speakers", type=int, default=None, help=f"number of speakers {defaults}")
    p.add_argument("--utterances", type=int, default=None, help=f"utterances per speaker {defaults}")
    p.add_argument("--seed", type=int, default=None, help=f"the corpus is a function of this seed {defaults}")
    p.add_argument("--sample-rate", type=int, default=None,
                   help=f"procedural only: sample rate of the FLAC files {defaults}; espeak renders 22050 Hz")
    p.add_argument("--shared", type=int, default=None,
                   help=f"espeak only: how many sentences every speaker says with the same text {defaults}")
    p.add_argument("--workers", type=int, default=2, help="rendering processes (default 2)")


def _synthetic_corpus(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
    """Write a generated multi-speaker corpus (procedural or eSpeak NG)."""
    from dataclasses import asdict, fields

    from lightning_tts.atomic import require_parent
    from lightning_tts.data.espeak import EspeakConfig, build_espeak_corpus
    from lightning_tts.data.synthetic import SyntheticConfig, build_synthetic_corpus

    schema = EspeakConfig if args.engine == "espeak" else SyntheticConfig
    names = {f.name for f in fields(schema)}
    for option in ("sample_rate", "shared"):
        if option not in names and getattr(args, option) is not None:
            raise ConfigError(f"--{option.replace('_', '-')} does not apply to --engine {args.engine}")
    corpus = schema(**{k: getattr(args, k) for k in names if getattr(args, k) is not None})
    checks = [("speakers", corpus.speakers), ("utterances", corpus.utterances), ("workers", args.workers)]
    checks += [(k, getattr(corpus, k)) for k in ("sample_rate",) if k in names]
    for name, value in checks:
        if value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if isinstance(corpus, EspeakConfig) and not 0 <= corpus.shared <= corpus.utterances:
        raise ConfigError(f"--shared must be between 0 and --utterances ({corpus.utterances}), got {corpus.shared}")
    require_parent(args.out, "create")
    if isinstance(corpus, EspeakConfig):
        build_espeak_corpus(args.out, corpus, workers=args.workers, progress=not args.no_progress)
    else:
        build_synthetic_corpus(args.out, **asdict(corpus), workers=args.workers, progress=not args.no_progress)
    print(f"{args.engine} corpus: {corpus.speakers} speakers x {corpus.utterances} utterances in {args.out}")
    return 0


class _LazyBar:
    """A tqdm bar that appears at its first step, so an error raised before any progress prints as
    one clean line."""

    def __init__(self, **options: object) -> None:
        self.options, self.bar = options, None

    def step(self, note: str = "") -> None:
        """Advance by one, showing ``note``."""
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(**self.options)
        self.bar.update()
        self.bar.set_postfix_str(note)

    def close(self) -> None:
        """Close the bar if it appeared."""
        if self.bar is not None:
            self.bar.close()


def _is_rank_zero() -> bool:
    """True in the process that should print (rank 0 under DDP)."""
    from pytorch_lightning.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _fit(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
    """Train; print where everything went. SIGTERM/SIGINT: print where the step reached went; exit 143/130."""
    from pytorch_lightning.utilities import rank_zero_only

    from lightning_tts.training import TrainingInterrupted, run

    assert cfg is not None
    try:
        result = run(cfg, "fit", progress=not args.no_progress)
    except TrainingInterrupted as stop:
        rank = getattr(rank_zero_only, "rank", 0)
        print(f"{f'[rank {rank}] ' if rank else ''}{stop}", file=sys.stderr)
        return stop.exit_code
    if _is_rank_zero():
        print(f"run directory: {result.run_dir}")
        print(f"  config:      {result.run_dir / 'config.yaml'}")
        print(f"  checkpoints: best {result.best_checkpoint}, last {result.last_checkpoint}")
        csv, tensorboard = result.run_dir / "logs" / "metrics.csv", result.run_dir / "tensorboard"
        if csv.is_file():
            print(f"  logs:        {csv}")
        if tensorboard.is_dir():
            print(f"  TensorBoard: tensorboard --logdir {tensorboard}  (scalars, and few-shot audio)")
        print(f"  plots:       {result.run_dir / 'images'}")
        shown = {k: round(v, 4) for k, v in sorted(result.metrics.items()) if k.startswith("val/")}
        print(f"  final validation: {shown}")
    return 0


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="experiment file (default conf/experiment/fewshot_default.yaml); repeatable, merged left to right")
    p.add_argument("--print-config", action="store_true", help="print the resolved experiment and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="experiment keys (out=DIR, tune.lrs=[...], systems.NAME.overrides=[...]); any other key "
                        "is a run-config override for every system (data.root=...)")


def _experiment(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
    """Train every system, choose adaptation rates on validation speakers, evaluate on test speakers."""
    from lightning_tts.experiment import load_experiment, report_name, run_experiment
    from lightning_tts.training import TrainingInterrupted

    experiment = load_experiment(args.config, args.overrides)
    if args.print_config:
        print(OmegaConf.to_yaml(OmegaConf.structured(experiment)), end="")
        return 0
    try:
        report = run_experiment(experiment, progress=not args.no_progress, say=lambda line: print(line, flush=True))
    except TrainingInterrupted as stop:
        print(f"{stop}; run the same command again to resume", file=sys.stderr)
        return stop.exit_code
    print(f"report: {report}")
    print(f"listening page: {report.parent / experiment.evaluate.name / 'report.html'}")
    for grid in experiment.also_evaluate:
        print(f"report of {grid.name}: {report.parent / report_name(grid.name)}")
    return 0


def _checkpoint_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by fit")


def _score_args(p: argparse.ArgumentParser) -> None:
    _checkpoint_arg(p)
    p.add_argument("--adapt-steps", type=int, default=None,
                   help="adaptation steps per speaker (default: the learner's adapt_steps)")


def _evaluate_stage(stage: str) -> Callable[[argparse.Namespace, Optional[DictConfig]], int]:
    """Handler of ``validate``/``test``: score a checkpoint on the configured data."""

    def handler(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
        from lightning_tts.training import run

        assert cfg is not None
        if args.adapt_steps is not None and args.adapt_steps < 0:
            raise ConfigError(f"--adapt-steps must be >= 0, got {args.adapt_steps}")
        result = run(cfg, stage, checkpoint=args.checkpoint, progress=not args.no_progress,
                     adapt_steps=args.adapt_steps)
        if _is_rank_zero():
            for key, value in sorted(result.metrics.items()):
                print(f"{key}: {value:.4f}")
        return 0

    return handler


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")


def _synthesize_args(p: argparse.ArgumentParser) -> None:
    _checkpoint_arg(p)
    p.add_argument("--text", required=True, help="what to say")
    p.add_argument("--out", required=True, help="output .wav (16-bit PCM at the model's sample rate)")
    voice = p.add_mutually_exclusive_group()
    voice.add_argument("--speaker", help="a training speaker of the checkpoint")
    voice.add_argument("--adapted", help="an adapted voice written by 'adapt' from this checkpoint")
    voice.add_argument("--reference", nargs="+", metavar="AUDIO",
                       help="clone a voice from reference recordings alone (learners with a speaker encoder or memory)")
    p.add_argument("--pace", type=float, default=1.0, help="speaking-rate factor (2.0 = twice as fast)")
    _device_arg(p)
    p.add_argument("--vocoder", default="griffin_lim",
                   help="griffin_lim, or hifigan (pretrained; 22 050 Hz checkpoints; pip install 'lightning_tts[hifigan]')")
    p.add_argument("--griffin-lim-iters", type=int, default=None, help="Griffin-Lim iterations (default: vocoder.griffin_lim's)")


def _synthesize(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
    """Text -> wav with a checkpoint and a voice."""
    from lightning_tts.api import TTS, check_audio_output
    from lightning_tts.models.vocoder import GriffinLimConfig, VocoderConfig

    if args.pace <= 0:
        raise ConfigError(f"--pace must be > 0, got {args.pace}")
    check_audio_output(args.out)
    vocoder = VocoderConfig(name=args.vocoder)
    if args.griffin_lim_iters is not None:
        vocoder.griffin_lim = GriffinLimConfig(iters=args.griffin_lim_iters)
    tts = TTS.from_checkpoint(args.checkpoint, device=args.device, vocoder=vocoder)
    if args.adapted is not None:
        voice = tts.load(args.adapted)
    elif args.reference is not None:
        voice = tts.clone(args.reference)
    else:
        voice = tts.speaker(args.speaker)
    spoken = tts.to_file(args.text, voice, args.out, pace=args.pace)
    if args.speaker is None and args.adapted is None and args.reference is None:
        print(f"no voice given: used training {voice.description} (--speaker to choose)", file=sys.stderr)
    print(f"wrote {spoken.path}: {spoken.seconds:.2f} s, {spoken.frames} frames, {voice.description}")
    return 0


def _adapt_args(p: argparse.ArgumentParser) -> None:
    _checkpoint_arg(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--support", help="folder of wav/flac files with same-stem .txt transcripts")
    source.add_argument("--manifest", help="CSV/JSONL manifest (audio,text) instead of a folder")
    p.add_argument("--out", required=True, help="the adapted-voice file to write")
    p.add_argument("--shots", type=int, default=None, help="use the first K usable utterances (default: all)")
    p.add_argument("--steps", type=int, default=None, help="adaptation steps (default: the learner's adapt_steps)")
    p.add_argument("--lr", type=float, default=None, help="adaptation learning rate (default: the learner's)")
    _device_arg(p)


def _adapt(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
    """Adapt a checkpoint to a new voice from a few utterances; write only what changed."""
    from lightning_tts.api import TTS, check_adapt_options
    from lightning_tts.atomic import require_parent

    check_adapt_options(args.steps, args.lr)
    require_parent(args.out)
    tts = TTS.from_checkpoint(args.checkpoint, device=args.device)
    steps = tts.learner.adapt_steps if args.steps is None else args.steps
    bar = _LazyBar(total=steps, desc="adapt", unit="step", disable=args.no_progress)
    try:
        voice = tts.adapt(args.support, shots=args.shots, steps=steps, lr=args.lr, manifest=args.manifest,
                          progress=lambda loss: bar.step(f"loss={loss:.3f}"))
    finally:
        bar.close()
    tts.save(voice, args.out)
    info = voice.info
    for path, reason in info["skipped"]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"adapted {tts.learner.name} to {len(info['support'])} utterances in {info['steps']} steps: "
          f"support mel L1 {info['support_loss_before']:.4f} -> {info['support_loss_after']:.4f}")
    print(f"wrote {args.out}")
    return 0


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, nargs="+", help="one or more checkpoints (any learners)")
    p.add_argument("--shots", default="1,5,10", help="comma-separated K values (default 1,5,10)")
    p.add_argument("--steps", default="0,5,20", help="comma-separated adaptation steps (default 0,5,20)")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--samples", type=int, default=2, metavar="N",
                   help="queries per speaker whose audio is kept in OUT/samples/ and played in OUT/report.html "
                        "(default 2; 0 keeps none)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="speakers to adapt to: test (default), or val to choose adaptation settings such as "
                        "--adapt-lr without looking at the test speakers")
    p.add_argument("--adapt-lr", type=float, default=None, metavar="LR",
                   help="adaptation learning rate for every checkpoint (default: each learner's own)")
    p.add_argument("--adapt-option", action="append", default=[], metavar="KEY=VALUE",
                   help="override how every checkpoint adapts (repeatable): adapt_params=[...], adapt_anchor=W "
                        "(pull toward the start, L2-SP), adapt_holdout=true (early stopping on a held-out "
                        "support utterance); learners that adapt with Adam only, not MAML")
    p.add_argument("--metrics", default=None, metavar="M1,M2",
                   help="score only these metrics, e.g. mcd,speaker_sim,wer (default: every metric the config "
                        "allows)")
    _device_arg(p)


def _int_list(text: str, flag: str) -> list[int]:
    """'1,5,10' -> [1, 5, 10]."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ConfigError(f"{flag} must be comma-separated integers, got {text!r}") from err


def _key_values(items: Sequence[str], flag: str) -> dict[str, Any]:
    """['adapt_anchor=10', 'adapt_params=[]'] -> {'adapt_anchor': 10, 'adapt_params': []} (values as in overrides)."""
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"{flag} takes KEY=VALUE, got {item!r}")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(items)))  # type: ignore[return-value]
    except Exception as err:
        raise ConfigError(f"{flag}: cannot read {list(items)} ({str(err).splitlines()[0]})") from err


def _metric_selection(text: Optional[str], cfg: DictConfig) -> Optional[list[str]]:
    """``--metrics mcd,wer`` -> ['mcd', 'wer'] (None when the flag is not given: every metric).

    Raises:
        ConfigError: no metric, an unknown one, or one the config turns off, naming the flag.
    """
    from lightning_tts.evaluation.grid import check_metrics

    if text is None:
        return None
    metrics = _names(text)
    try:
        check_metrics(metrics, cfg)
    except DataError as err:
        raise ConfigError(f"--metrics: {err}") from err
    return metrics


def _evaluate(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
    """Few-shot evaluation grid -> results.json/.csv/.md, adaptation_curves.png, samples/ and report.html."""
    from lightning_tts.evaluation.grid import run_evaluation
    from lightning_tts.evaluation.report import REPORT_FILES, results_markdown

    assert cfg is not None
    shots, steps = _int_list(args.shots, "--shots"), _int_list(args.steps, "--steps")
    bar = _LazyBar(total=2 + len(args.checkpoint) * len(shots) * len(steps), desc="evaluate", unit="cell",
                   disable=args.no_progress)
    try:
        results = run_evaluation(cfg, args.checkpoint, shots, steps, args.out, device=args.device,
                                 progress=bar.step, samples=args.samples, split=args.split,
                                 adapt_lrs=[args.adapt_lr] * len(args.checkpoint),
                                 adapt_options=_key_values(args.adapt_option, "--adapt-option"),
                                 metrics=_metric_selection(args.metrics, cfg))
    finally:
        bar.close()
    print(results_markdown(results))
    for name in REPORT_FILES:
        print(f"wrote {Path(args.out) / name}")
    if results["samples"]:
        print(f"wrote {len(results['samples'])} clips to {Path(args.out) / 'samples'}; "
              f"open {Path(args.out) / 'report.html'} in a browser to listen")
    return 0


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", metavar="RESULTS_JSON",
                   help="results.json files of evaluate (or of an experiment's evaluate stage) over the same "
                        "test speakers and queries")
    p.add_argument("--reference", required=True, metavar="SYSTEM",
                   help="the system every other is paired against (NAME@I for the system NAME of the I-th file "
                        "when several files have it)")
    p.add_argument("--metrics", default=None, metavar="M1,M2",
                   help="comma-separated metrics (default: every metric all files scored)")
    p.add_argument("--pool", action="append", default=[], metavar="[NAME=]S1,S2,...",
                   help="also compare the per-query mean of these systems as one system NAME (default: mean(S1, S2, ...)), "
                        "e.g. runs of one recipe with other seeds; its CI resamples the runs too; it may be the "
                        "--reference; repeatable")
    p.add_argument("--speakers", default=None, metavar="S1,S2,...",
                   help="only these test speakers' queries (default: all; files must then have evaluated the same speakers)")
    p.add_argument("--out", default=None, metavar="FILE.md", help="also write the table to this file")


def _names(text: Optional[str]) -> list[str]:
    """The names of a comma-separated option (empty when it is not given)."""
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def _pools(specs: Sequence[str]) -> dict[str, list[str]]:
    """Pool name -> members of each ``--pool [NAME=]S1,S2,...`` (unnamed: ``mean(S1, S2, ...)``).

    Raises:
        DataError: two pools of one name.
    """
    from lightning_tts.evaluation.compare import pool_name

    pools: dict[str, list[str]] = {}
    for spec in specs:
        name, _, members = spec.partition("=") if "=" in spec else ("", "", spec)
        name = name.strip() or pool_name(_names(members))
        if name in pools:
            raise DataError(f"--pool {name}: named twice")
        pools[name] = _names(members)
    return pools


def _compare(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
    """Paired differences against a chosen system, across one or more evaluations."""
    from lightning_tts.atomic import require_parent, write_text
    from lightning_tts.evaluation.compare import compare_markdown, compare_results

    out = require_parent(args.out, "write") if args.out else None
    metrics, speakers = (_names(value) for value in (args.metrics, args.speakers))
    pools = _pools(args.pool)
    differences = compare_results(args.results, args.reference, metrics or None, pools, speakers)
    text = compare_markdown(args.results, differences, speakers, pools)
    print(text)
    if out is not None:
        write_text(out, text + "\n")
        print(f"wrote {out}")
    return 0


def _embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint with a speaker encoder (a metric run), or 'resemblyzer' for the pretrained judge")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--split", default="test", help="speakers to embed: train, val, test or heldout (default test)")
    p.add_argument("--per-speaker", type=int, default=20, help="utterances per speaker (default 20)")
    p.add_argument("--method", default="umap", help="2-D projection: umap, tsne or pca (default umap)")
    _device_arg(p)


def _embed(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
    """Speaker embeddings of a split -> embeddings.npz + a speaker map (umap.png)."""
    from lightning_tts.embeddings import embed_split

    assert cfg is not None
    result = embed_split(cfg, args.checkpoint, args.out, args.split, args.per_speaker, args.method,
                         device=args.device, progress=not args.no_progress)
    print(f"embedded {len(result.embeddings.speakers)} utterances of {result.n_speakers} {args.split} speakers")
    if result.eer is not None:
        print(f"  EER over all pairs {result.eer:.4f}, cosine silhouette {result.silhouette:.3f}")
    for path in result.files:
        print(f"wrote {path}")
    return 0


def _slurm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="write config.yaml and the sbatch script here (default: print the script)")
    p.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    p.add_argument("--gpus-per-node", type=int, default=1, help="GPUs per node; 0 runs CPU processes (default 1)")
    p.add_argument("--tasks-per-node", type=int, default=None, help="CPU processes per node when --gpus-per-node 0")
    p.add_argument("--cpus-per-task", type=int, default=8, help="CPU cores per process (default 8)")
    p.add_argument("--time", default="24:00:00", help="wall-clock limit per allocation (default 24:00:00)")
    p.add_argument("--job-name", default="lightning_tts", help="job name (default lightning_tts)")
    p.add_argument("--partition", default=None, help="SLURM partition")
    p.add_argument("--account", default=None, help="SLURM account")
    p.add_argument("--grace", type=int, default=90,
                   help="seconds before the time limit to checkpoint and requeue (default 90)")


def _slurm(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
    """Write an sbatch script + resolved config for multi-node DDP with checkpoint-and-requeue."""
    from lightning_tts.paths import resolve_path
    from lightning_tts.slurm import SlurmJob, sbatch_script, trainer_overrides, write_job

    assert cfg is not None
    job = SlurmJob(nodes=args.nodes, gpus_per_node=args.gpus_per_node, tasks_per_node=args.tasks_per_node,
                   cpus_per_task=args.cpus_per_task, time=args.time, job_name=args.job_name, partition=args.partition,
                   account=args.account, grace=args.grace)
    if args.out is None:
        job.validate()
        fit_args = [a for f in args.config for a in ("--config", str(resolve_path(f).resolve()))]
        print(sbatch_script(job, [*fit_args, *args.overrides, *trainer_overrides(job)], Path.cwd(), Path.cwd()))
        return 0
    config, script = write_job(cfg, job, args.out, Path.cwd())
    print(script.read_text())
    print(f"wrote {config}")
    print(f"wrote {script}; submit with: sbatch {script}")
    return 0


COMMANDS: dict[str, Command] = {
    "fit": Command("train a learner (resume with ckpt_path=PATH or ckpt_path=last)", _fit),
    "validate": Command("score a checkpoint on the validation batches", _evaluate_stage("validate"), _score_args),
    "test": Command("adapt a checkpoint to each test speaker and score the query utterances",
                    _evaluate_stage("test"), _score_args),
    "preprocess": Command("read a corpus and bring its feature cache up to date", _preprocess, _preprocess_args),
    "synthetic-corpus": Command("write a generated multi-speaker corpus (procedural, or eSpeak NG English)", _synthetic_corpus, _synthetic_args,
                                uses_config=False),
    "adapt": Command("adapt a checkpoint to a new speaker from a few utterances", _adapt, _adapt_args,
                     uses_config=False),
    "synthesize": Command("text -> wav with a trained (and optionally adapted) model", _synthesize,
                          _synthesize_args, uses_config=False),
    "evaluate": Command("few-shot evaluation tables, adaptation curves and a listening page", _evaluate,
                        _evaluate_args),
    "compare": Command("paired differences against any system, across evaluations of the same test queries",
                       _compare, _compare_args, uses_config=False),
    "experiment": Command("the whole few-shot comparison: train every system, tune on validation speakers, "
                          "evaluate on test speakers (resumable)", _experiment, _experiment_args, uses_config=False),
    "embed": Command("speaker embeddings of a split -> embeddings.npz and a UMAP speaker map", _embed, _embed_args),
    "slurm": Command("write an sbatch script (multi-node DDP, checkpoint + requeue) for fit", _slurm, _slurm_args),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per command."""
    parser = argparse.ArgumentParser(prog="python -m lightning_tts", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(p)
        if command.uses_config:
            p.add_argument("--config", action="append", default=[], metavar="FILE",
                           help="YAML merged over conf/default.yaml (repeatable, left to right)")
            p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
            p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]  # key=value items given after an option
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    command = COMMANDS[args.command]
    try:
        from lightning_tts.config import load_config  # here, not at the top: --help starts without torch
        from lightning_tts.schema import to_yaml

        cfg = load_config(args.config, args.overrides) if command.uses_config else None
        if cfg is not None and args.print_config:
            print(to_yaml(cfg), end="")
            return 0
        return command.handler(args, cfg)
    except LightningTTSError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
