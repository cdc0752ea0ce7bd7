"""The few-shot evaluation grid in one process against the same grid shared among worker processes
(``fewshot.workers``, ``lightning_tts.evaluation.parallel``).

Trains a multispeaker checkpoint briefly on a synthetic corpus, then times one ``run_evaluation`` of it
(K = 1 and 5 at 0 / 5 / 20 adaptation steps, 5 queries per test speaker, Griffin-Lim, MCD, F0, PESQ, STOI
and the judge; no recogniser) with ``fewshot.workers=1`` (this process, torch's own thread count)
and with ``fewshot.workers=0`` (one worker process per core, one thread each): the same work, so the
ratio is the speed-up. The worker processes' start (imports, checkpoint and judge loading) is inside
their time.

    python -m benchmarks.evaluation_workers [--speakers 8] [--steps 200] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def evaluation_workers(root: Path, tmp: Path, speakers: int, max_steps: int) -> dict[str, Any]:
    """Seconds of the grid on ``speakers`` test speakers of the corpus at ``root``, in one process and in
    worker processes, after ``max_steps`` training steps of a multispeaker model."""
    from lightning_tts.config import load_config
    from lightning_tts.evaluation.grid import run_evaluation
    from lightning_tts.evaluation.parallel import grid_workers
    from lightning_tts.training import run

    data = [f"data.root={root}", f"data.cache_dir={tmp / 'cache'}", "data.splits.val=2",
            f"data.splits.test={speakers}", "data.tasks.queries=5", "fewshot.every=0", "fewshot.wer=false"]
    trained = run(load_config(["conf/learner/multispeaker.yaml"],
                              [*data, f"trainer.max_steps={max_steps}", f"trainer.default_root_dir={tmp / 'runs_eval'}",
                               "trainer.enable_progress_bar=false", f"trainer.val_check_interval={max_steps}",
                               "trainer.limit_val_batches=1"]), progress=False)
    checkpoint = str(trained.last_checkpoint)
    out: dict[str, Any] = {"speakers": speakers, "trained_steps": max_steps, "threads": torch.get_num_threads()}
    for label, workers in (("one_process", 1), ("workers", 0)):
        cfg = load_config([], [*data, f"fewshot.workers={workers}"])
        t0 = time.perf_counter()
        run_evaluation(cfg, [checkpoint], [1, 5], [0, 5, 20], tmp / f"eval_{label}", samples=0)
        out[label] = {"seconds": time.perf_counter() - t0}
    out["workers"]["processes"] = min(grid_workers(0), speakers)
    out["speedup"] = out["one_process"]["seconds"] / out["workers"]["seconds"]
    return out


def evaluation_row(e: dict[str, Any]) -> tuple[str, ...]:
    """Row 9 of the benchmark table."""
    return ("9", f"evaluation grid, 1 checkpoint x K=1,5 x 0/5/20 steps x {e['speakers']} speakers: one process "
            f"({e['threads']} threads) / {e['workers']['processes']} worker processes",
            f"{e['one_process']['seconds']:.1f} / {e['workers']['seconds']:.1f} s", f"{e['speedup']:.2f}x faster", "")


def main(argv: list[str] | None = None) -> int:
    from lightning_tts.atomic import write_json
    from lightning_tts.data.synthetic import build_synthetic_corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", type=int, default=8, help="test speakers")
    parser.add_argument("--steps", type=int, default=200, help="training steps of the checkpoint")
    parser.add_argument("--out", type=Path, default=None, help="also write the result as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        root = build_synthetic_corpus(tmp / "corpus", speakers=args.speakers + 8, utterances=30, seed=7, workers=2,
                                      progress=False)
        result = evaluation_workers(root, tmp, args.speakers, args.steps)
    row = evaluation_row(result)
    print("| " + " | ".join(row) + " |")
    if args.out is not None:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
