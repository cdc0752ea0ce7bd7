"""The command line: ``python -m lightning_tts COMMAND [--config FILE]... [dotted.key=value]...``.

Every command that takes a configuration merges ``conf/default.yaml``, then each ``--config`` file,
then the overrides (see ``lightning_tts.config``). Errors caused by input are printed as one line
(``error: ...``) with a non-zero exit code; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from omegaconf import DictConfig

from lightning_tts.config import load_config, to_yaml
from lightning_tts.errors import ConfigError, DataError, LightningTTSError

if TYPE_CHECKING:
    import torch

    from lightning_tts.learners.base import BaseLearner

log = logging.getLogger("lightning_tts")


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, its own arguments, whether it reads a config, and its handler."""

    help: str
    handler: Callable[[argparse.Namespace, Optional[DictConfig]], int]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None
    uses_config: bool = True


def _preprocess(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
    """Read the corpus, cache features, write the index and the skip report."""
    from lightning_tts.audio import FeatureParams
    from lightning_tts.data.cache import preprocess

    assert cfg is not None
    cache, index = preprocess(cfg.data, FeatureParams.from_config(cfg.features), phonemes=cfg.text.phonemes,
                              progress=not args.no_progress)
    print(index.summary())
    print(f"features: {cache.directory}")
    print(f"skip report: {cache.directory / 'report.json'}")
    return 0


def _synthetic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="corpus root to create (VCTK-0.92 layout)")
    p.add_argument("--speakers", type=int, default=40, help="number of speakers (default 40)")
    p.add_argument("--utterances", type=int, default=30, help="utterances per speaker (default 30)")
    p.add_argument("--seed", type=int, default=0, help="the corpus is a function of this seed")
    p.add_argument("--sample-rate", type=int, default=16000, help="sample rate of the FLAC files")
    p.add_argument("--workers", type=int, default=2, help="rendering processes")


def _synthetic_corpus(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
    """Write the procedural multi-speaker corpus."""
    import json

    from lightning_tts.data.synthetic import build_synthetic_corpus

    for name in ("speakers", "utterances", "sample_rate", "workers"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    out = Path(args.out)
    params_file = out / "speaker-params.json"
    if params_file.is_file():
        old = json.loads(params_file.read_text())
        if (old["seed"], old["sample_rate"]) != (args.seed, args.sample_rate):
            raise DataError(f"{out} already holds a synthetic corpus with seed={old['seed']} and "
                            f"sample_rate={old['sample_rate']}; choose another --out")
    if not out.parent.is_dir():
        raise DataError(f"cannot create {out}: directory {out.parent} does not exist")
    build_synthetic_corpus(out, speakers=args.speakers, utterances=args.utterances, seed=args.seed,
                           sample_rate=args.sample_rate, workers=args.workers, progress=not args.no_progress)
    print(f"synthetic corpus: {args.speakers} speakers x {args.utterances} utterances in {out}")
    return 0


def _is_rank_zero() -> bool:
    """True in the process that should print (rank 0 under DDP)."""
    from pytorch_lightning.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _fit(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
    """Train; print where everything went."""
    from lightning_tts.training import run

    assert cfg is not None
    result = run(cfg, "fit", progress=not args.no_progress)
    if _is_rank_zero():
        print(f"run directory: {result.run_dir}")
        print(f"  config:      {result.run_dir / 'config.yaml'}")
        print(f"  checkpoints: best {result.best_checkpoint}, last {result.last_checkpoint}")
        print(f"  logs:        {result.run_dir / 'logs' / 'metrics.csv'} "
              f"(TensorBoard: tensorboard --logdir {result.run_dir / 'tensorboard'})")
        print(f"  plots:       {result.run_dir / 'images'}")
        shown = {k: round(v, 4) for k, v in sorted(result.metrics.items()) if k.startswith("val/")}
        print(f"  final validation: {shown}")
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
    p.add_argument("--griffin-lim-iters", type=int, default=32, help="Griffin-Lim iterations")


def _synthesize(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
    """Text -> wav with a checkpoint and a voice."""
    import torch

    from lightning_tts.audio import write_audio
    from lightning_tts.learners import load_learner
    from lightning_tts.models.vocoder import GriffinLimVocoder

    if args.pace <= 0:
        raise ConfigError(f"--pace must be > 0, got {args.pace}")
    out = Path(args.out)
    if out.suffix.lower() not in (".wav", ".flac"):
        raise LightningTTSError(f"--out must end in .wav or .flac, got {out}")
    if not out.parent.is_dir():
        raise LightningTTSError(f"cannot write {out}: directory {out.parent} does not exist")
    learner = load_learner(args.checkpoint)
    tokens = torch.tensor(learner.text.encode(args.text), dtype=torch.long)
    if args.adapted is not None:
        from lightning_tts.adaptation import load_adapted

        state, voice = load_adapted(args.adapted, learner, args.checkpoint), f"adapted voice {args.adapted}"
    elif args.reference is not None:
        state, voice = learner.reference_state(_reference_mels(args.reference, learner)), \
            f"zero-shot voice of {len(args.reference)} reference file(s)"
    else:
        speaker = args.speaker if args.speaker is not None else learner.speakers[0]
        if args.speaker is None:
            print(f"no voice given: using training speaker {speaker} (--speaker to choose)", file=sys.stderr)
        state, voice = learner.speaker_state(speaker), f"speaker {speaker}"
    mel = learner.synthesize(tokens, state, pace=args.pace)
    wav = GriffinLimVocoder(learner.feature_params, n_iter=args.griffin_lim_iters)(mel)
    write_audio(out, wav, learner.feature_params.sample_rate)
    print(f"wrote {out}: {wav.numel() / learner.feature_params.sample_rate:.2f} s, {mel.shape[0]} frames, {voice}")
    return 0


def _reference_mels(paths: Sequence[str], learner: "BaseLearner") -> list["torch.Tensor"]:
    """Log-mels (T, n_mels) of reference recordings at the learner's feature settings.

    Raises:
        DataError: a missing, unreadable or too short file.
    """
    from lightning_tts.audio import FeatureExtractor, read_audio

    extractor = FeatureExtractor(learner.feature_params)
    mels = []
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"reference audio not found: {path}")
        try:
            wav = read_audio(path, learner.feature_params.sample_rate)
        except Exception as err:  # soundfile's errors for corrupt or unsupported files
            raise DataError(f"cannot read reference audio {path}: {str(err).strip().splitlines()[0]}") from err
        if wav.numel() < learner.feature_params.win_length:
            raise DataError(f"reference audio {path} is too short ({wav.numel()} samples)")
        mels.append(extractor(wav)["mel"])
    return mels


def _adapt_args(p: argparse.ArgumentParser) -> None:
    _checkpoint_arg(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--support", help="folder of wav/flac files with same-stem .txt transcripts")
    source.add_argument("--manifest", help="CSV/JSONL manifest (audio,text) instead of a folder")
    p.add_argument("--out", required=True, help="the adapted-voice file to write")
    p.add_argument("--shots", type=int, default=None, help="use the first K usable utterances (default: all)")
    p.add_argument("--steps", type=int, default=None, help="adaptation steps (default: the learner's adapt_steps)")
    p.add_argument("--lr", type=float, default=None, help="adaptation learning rate (default: the learner's)")


def _adapt(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
    """Adapt a checkpoint to a new voice from a few utterances; write only what changed."""
    import torch
    from tqdm import tqdm

    from lightning_tts.adaptation import save_adapted
    from lightning_tts.data.support import load_support
    from lightning_tts.learners import load_learner
    from lightning_tts.learners.base import AdaptedState

    if args.steps is not None and args.steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {args.steps}")
    if args.lr is not None and args.lr <= 0:
        raise ConfigError(f"--lr must be > 0, got {args.lr}")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise LightningTTSError(f"cannot write {out}: directory {out.parent} does not exist")
    learner = load_learner(args.checkpoint)
    support = load_support(learner.feature_params, learner.text, args.support, args.manifest, args.shots)
    for path, reason in support.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    steps = learner.adapt_steps if args.steps is None else args.steps
    batch = support.batch
    durations = learner.align(batch)
    start = learner.adapt(batch, steps=0)
    with torch.no_grad():
        before = float(learner.support_mel_loss(batch, start.speaker, start.params or None, durations, start.extras))
    bar = tqdm(total=steps, desc="adapt", unit="step", disable=args.no_progress)
    state: AdaptedState = learner.adapt(batch, steps=steps, lr=args.lr,
                                        progress=lambda loss: (bar.update(), bar.set_postfix(loss=f"{loss:.3f}")))
    bar.close()
    with torch.no_grad():
        after = float(learner.support_mel_loss(batch, state.speaker, state.params or None, durations, state.extras))
    save_adapted(out, state, learner, args.checkpoint, {"support": support.paths, "steps": steps, "lr": args.lr,
                                                       "support_loss_before": before, "support_loss_after": after})
    print(f"adapted {learner.name} to {len(support.paths)} utterances in {steps} steps: "
          f"support mel L1 {before:.4f} -> {after:.4f}")
    print(f"wrote {out}")
    return 0




def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, nargs="+", help="one or more checkpoints (any learners)")
    p.add_argument("--shots", default="1,5,10", help="comma-separated K values (default 1,5,10)")
    p.add_argument("--steps", default="0,5,20", help="comma-separated adaptation steps (default 0,5,20)")
    p.add_argument("--out", required=True, help="output directory (created)")


def _int_list(text: str, flag: str) -> list[int]:
    """'1,5,10' -> [1, 5, 10]."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ConfigError(f"{flag} must be comma-separated integers, got {text!r}") from err


def _evaluate(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
    """Few-shot evaluation grid -> results.json/.csv/.md and adaptation_curves.png."""
    from tqdm import tqdm

    from lightning_tts.evaluation import run_evaluation

    assert cfg is not None
    shots, steps = _int_list(args.shots, "--shots"), _int_list(args.steps, "--steps")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise LightningTTSError(f"cannot create {out}: directory {out.parent} does not exist")
    bar = tqdm(total=2 + len(args.checkpoint) * len(shots) * len(steps), desc="evaluate", unit="cell",
               disable=args.no_progress)
    run_evaluation(cfg, args.checkpoint, shots, steps, out, progress=lambda what: (bar.update(), bar.set_postfix_str(what)))
    bar.close()
    print((out / "results.md").read_text())
    for name in ("results.json", "results.csv", "results.md", "adaptation_curves.png"):
        print(f"wrote {out / name}")
    return 0


def _embed_args(p: argparse.ArgumentParser) -> None:
    _checkpoint_arg(p)
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--split", default="test", help="speakers to embed: train, val, test or heldout (default test)")
    p.add_argument("--per-speaker", type=int, default=20, help="utterances per speaker (default 20)")
    p.add_argument("--method", default="umap", help="2-D projection: umap, tsne or pca (default umap)")


def _embed(args: argparse.Namespace, cfg: Optional[DictConfig]) -> int:
    """Speaker embeddings of a split -> embeddings.npz + a speaker map (umap.png)."""
    import numpy as np

    from lightning_tts.embeddings import embed_dataset, speaker_genders, split_utterances
    from lightning_tts.learners import load_learner
    from lightning_tts.learners.metric import verification_scores
    from lightning_tts.plots import PROJECTIONS, project_embeddings, save_figure, speaker_map_figure
    from lightning_tts.training import build_datamodule, check_compatible

    assert cfg is not None
    if args.method not in PROJECTIONS:
        raise ConfigError(f"--method must be one of {', '.join(PROJECTIONS)}, got {args.method!r}")
    if args.per_speaker < 1:
        raise ConfigError(f"--per-speaker must be >= 1, got {args.per_speaker}")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise LightningTTSError(f"cannot create {out}: directory {out.parent} does not exist")
    learner = load_learner(args.checkpoint)
    check_compatible(learner, cfg)
    dm = build_datamodule(cfg, learner.data_mode, progress=not args.no_progress)
    embeddings = embed_dataset(learner, dm, split_utterances(dm, args.split, args.per_speaker))
    out.mkdir(exist_ok=True)
    embeddings.save(out / "embeddings.npz")
    points = project_embeddings(embeddings.vectors, args.method, cfg.seed)
    n_speakers = len(set(embeddings.speakers))
    save_figure(speaker_map_figure(points, embeddings.speakers, speaker_genders(dm),
                                   title=f"{args.method.upper()}: {n_speakers} {args.split} speakers"),
                out / f"{args.method}.png")
    print(f"embedded {len(embeddings.speakers)} utterances of {n_speakers} {args.split} speakers")
    if n_speakers > 1:
        eer, silhouette = verification_scores(embeddings.vectors, np.asarray(embeddings.speakers))
        print(f"  EER over all pairs {eer:.4f}, cosine silhouette {silhouette:.3f}")
    print(f"wrote {out / 'embeddings.npz'}")
    print(f"wrote {out / (args.method + '.png')}")
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
    from lightning_tts.slurm import SlurmJob, sbatch_script, trainer_overrides, write_job

    assert cfg is not None
    job = SlurmJob(nodes=args.nodes, gpus_per_node=args.gpus_per_node, tasks_per_node=args.tasks_per_node,
                   cpus_per_task=args.cpus_per_task, time=args.time, job_name=args.job_name, partition=args.partition,
                   account=args.account, grace=args.grace)
    if args.out is None:
        job.validate()
        fit_args = [a for f in args.config for a in ("--config", str(Path(f).resolve()))]
        print(sbatch_script(job, [*fit_args, *args.overrides, *trainer_overrides(job)], Path.cwd(), Path.cwd()))
        return 0
    out = Path(args.out)
    if not out.parent.is_dir():
        raise LightningTTSError(f"cannot create {out}: directory {out.parent} does not exist")
    config, script = write_job(cfg, job, out, Path.cwd())
    print(script.read_text())
    print(f"wrote {config}")
    print(f"wrote {script}; submit with: sbatch {script}")
    return 0


COMMANDS: dict[str, Command] = {
    "fit": Command("train a learner (resume with ckpt_path=PATH or ckpt_path=last)", _fit),
    "validate": Command("score a checkpoint on the validation batches", _evaluate_stage("validate"), _score_args),
    "test": Command("adapt a checkpoint to each test speaker and score the query utterances",
                    _evaluate_stage("test"), _score_args),
    "preprocess": Command("read a corpus and build its feature cache", _preprocess),
    "synthetic-corpus": Command("write the procedural multi-speaker corpus", _synthetic_corpus, _synthetic_args,
                                uses_config=False),
    "adapt": Command("adapt a checkpoint to a new speaker from a few utterances", _adapt, _adapt_args,
                     uses_config=False),
    "synthesize": Command("text -> wav with a trained (and optionally adapted) model", _synthesize,
                          _synthesize_args, uses_config=False),
    "evaluate": Command("few-shot evaluation tables and adaptation curves", _evaluate, _evaluate_args),
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
