"""One meta-training step of the embedded-default preset's MAML form (``speaker_start=memory``, per-element
rates, 2 inner steps, T = 4 tasks of K = Q = 5) with every task's zero-shot start computed in one batched
pass over the meta-batch (``MAMLLearner.training_step``), against the same step with each task's start
computed alone (one fresh memory written per task, as before the batched pass).

Same weights, same task batches, the two alternating; the acoustic model in eval mode (no dropout), so
both compute the same losses (their largest difference is reported). Per-step seconds: medians over the
batches and repeats.

    python -m benchmarks.maml_start [--batches 4] [--repeats 3] [--out FILE]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.run import machine

PRESET_MAML = ["learner.speaker_start=memory", "learner.inner_lr_shape=element", "learner.inner_steps=2"]


def per_task_loss(learner: Any, batch: Any) -> torch.Tensor:
    """The meta-batch's query loss with each task's start computed from its own support set alone."""
    return torch.stack([learner.meta_losses(task)["loss"] for task in batch.tasks()]).mean()


def maml_start(root: Path, tmp: Path, batches: int, repeats: int) -> dict[str, Any]:
    """Seconds per meta-step (forward, backward, optimiser step), batched start vs per-task start."""
    from lightning_tts.config import load_config
    from lightning_tts.data.datamodule import build_datamodule
    from lightning_tts.learners import build_learner, get_learner

    cfg = load_config(["conf/learner/maml.yaml"], [f"data.root={root}", f"data.cache_dir={tmp / 'cache'}",
                                                    "data.splits.val=2", "data.splits.test=2", *PRESET_MAML])
    dm = build_datamodule(cfg, get_learner(cfg.learner.name).batches, progress=False)
    torch.manual_seed(0)
    learner = build_learner(cfg, speakers=dm.split.train, symbols=dm.text.symbols).eval()
    learner.log = lambda *a, **k: None  # no trainer attached
    learner.log_dict = lambda *a, **k: None
    loader = iter(dm.train_dataloader())
    task_batches = [next(loader) for _ in range(batches)]
    opt = torch.optim.SGD([p for p in learner.parameters() if p.requires_grad], lr=0.0)  # the step's cost, same weights

    def step(loss_of: Callable[[Any], torch.Tensor], batch: Any) -> float:
        t0 = time.perf_counter()
        loss = loss_of(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    def batched(batch: Any) -> torch.Tensor:
        return learner.training_step(batch, 0)

    times: dict[str, list[float]] = {"batched": [], "per_task": []}
    step(batched, task_batches[0])  # warm-up
    step(lambda b: per_task_loss(learner, b), task_batches[0])
    for _ in range(repeats):
        for batch in task_batches:
            times["batched"].append(step(batched, batch))
            times["per_task"].append(step(lambda b: per_task_loss(learner, b), batch))
    diff = max(abs(float(learner.training_step(b, 0).detach()) - float(per_task_loss(learner, b).detach()))
               for b in task_batches)  # the inner loop needs gradients, so no torch.no_grad here
    out: dict[str, Any] = {"machine": machine(), "overrides": PRESET_MAML, "tasks_per_batch": len(task_batches[0]),
                           "shots": task_batches[0].shots, "queries": task_batches[0].queries,
                           "steps_timed": len(times["batched"]), "max_abs_loss_difference": diff}
    for name, values in times.items():
        out[name] = {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values)}
    out["speedup"] = out["per_task"]["median_s"] / out["batched"]["median_s"]
    return out


def maml_start_row(r: dict[str, Any]) -> str:
    """One Markdown table row of a result."""
    return (f"| MAML meta-step, memory start, T={r['tasks_per_batch']} K={r['shots']} Q={r['queries']}: "
            f"start per task / batched | {r['per_task']['median_s']:.3f} / {r['batched']['median_s']:.3f} s | "
            f"{r['speedup']:.2f}x faster (loss difference {r['max_abs_loss_difference']:.1e}) |")


def main(argv: list[str] | None = None) -> int:
    from lightning_tts.atomic import write_json
    from lightning_tts.data.synthetic import build_synthetic_corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4, help="distinct task batches")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the batches")
    parser.add_argument("--out", type=Path, default=None, help="also write the result as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        root = build_synthetic_corpus(tmp / "corpus", speakers=12, utterances=30, seed=7, workers=2, progress=False)
        result = maml_start(root, tmp, args.batches, args.repeats)
    print(maml_start_row(result))
    if args.out is not None:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
