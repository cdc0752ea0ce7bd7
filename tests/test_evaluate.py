"""``evaluate`` over two learners' checkpoints, the few-shot callback, and the adaptation-curves notebook."""
from __future__ import annotations

import importlib.metadata
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import execute_notebook
from lightning_tts.cli import main
from lightning_tts.config import load_config
from lightning_tts.errors import DataError
from lightning_tts.evaluation.grid import check_metrics, run_evaluation
from lightning_tts.evaluation.parallel import THREAD_VARIABLES
from lightning_tts.evaluation.scoring import METRICS
from lightning_tts.training import run



@pytest.fixture(scope="module")
def checkpoints(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str], dict]:
    tmp = tmp_path_factory.mktemp("evaluate")
    common = [f"data.root={synthetic_root}", f"data.cache_dir={tmp / 'cache'}", f"trainer.default_root_dir={tmp / 'runs'}",
              "data.splits.val=2", "data.splits.test=2", "trainer.limit_val_batches=1", "trainer.val_check_interval=4",
              "trainer.check_val_every_n_epoch=null", "trainer.enable_progress_bar=false", "fewshot.queries=1",
              "fewshot.steps=2", "fewshot.shots=2", "data.tasks.tasks_per_batch=2", "data.tasks.queries=2"]
    baseline = run(load_config(["conf/learner/multispeaker.yaml"], [*common, "trainer.max_steps=8"]), progress=False)
    maml = run(load_config(["conf/learner/maml.yaml"], [*common, "trainer.max_steps=4", "learner.adapt_steps=2"]),
               progress=False)
    return [str(baseline.last_checkpoint), str(maml.last_checkpoint)], common, baseline.metrics


def test_fewshot_callback_logs_and_writes_samples(checkpoints) -> None:
    paths, _, metrics = checkpoints
    assert all(math.isfinite(metrics[f"val/fewshot/{m}"]) for m in ("mcd", "pesq", "stoi", "wer", "cer", "speaker_sim"))
    assert 0.0 <= metrics["val/fewshot/speaker_sim"] <= 1.0  # the default judge: resemblyzer (its embeddings are >= 0)
    run_dir = Path(paths[0]).parent.parent
    assert list((run_dir / "fewshot").glob("*.wav")) and list((run_dir / "fewshot").glob("*.png"))


def test_evaluate_two_checkpoints_writes_every_file_and_cell(checkpoints, tmp_path: Path, capsys) -> None:
    paths, common, _ = checkpoints
    out = tmp_path / "eval"
    overrides = [c for c in common if c.startswith(("data.", "trainer.default"))]
    assert main(["evaluate", "--checkpoint", *paths, "--shots", "1,2", "--steps", "0,2", "--out", str(out),
                 "--no-progress", *overrides]) == 0
    for name in ("results.json", "results.csv", "results.md", "adaptation_curves.png", "report.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    systems = {r["system"] for r in results["rows"]}
    assert {"ground truth", "vocoder ceiling"} <= systems and len(systems) == 4
    grid = [r for r in results["rows"] if r["shots"] is not None]
    assert len(grid) == 2 * 2 * 2
    for row in grid:
        assert math.isfinite(row["metrics"]["mcd"]["mean"]) and row["metrics"]["mcd"]["n"] == 2 * 2
        for metric in results["metrics"]:
            assert len(row["metrics"][metric]["values"]) == 4
    truth = next(r for r in results["rows"] if r["system"] == "ground truth")["metrics"]
    assert truth["mcd"]["mean"] == 0.0 and truth["pesq"]["mean"] == pytest.approx(4.64, abs=0.01)
    assert 0.0 <= truth["wer"]["mean"] and 0.0 <= truth["cer"]["mean"]  # the recordings' own WER: the reference row
    assert results["recognizer"].startswith("pocketsphinx")
    assert all(len(c["sha256"]) == 64 for c in results["checkpoints"])
    assert all(c["training_cost"]["optimizer_steps"] > 0 for c in results["checkpoints"])
    # paired differences against the first checkpoint: one per (shots, steps, metric) of the second
    diffs = results["differences"]
    assert len(diffs) == 2 * 2 * len(results["metrics"]) and {d["against"] for d in diffs} == {grid[0]["system"]}
    d = next(d for d in diffs if (d["shots"], d["steps"], d["metric"]) == (2, 2, "mcd"))
    a, b = (next(r for r in grid if r["system"] == s and r["shots"] == 2 and r["steps"] == 2)["metrics"]["mcd"]["values"]
            for s in (d["against"], d["system"]))
    assert d["mean"] == pytest.approx(sum(y - x for x, y in zip(a, b)) / len(a)) and d["clusters"] == 2
    assert d["ci_low"] <= d["mean"] <= d["ci_high"] and "## Paired differences against" in (out / "results.md").read_text()
    # word error rates of each adapted cell against the same system unadapted and against the vocoder ceiling
    rises = results["intelligibility"]
    assert len(rises) == 2 * 2 * 2 and {e["against"] for e in rises} == {"0 steps", "vocoder ceiling"}
    assert all(e["steps"] == 2 and e["metric"] == "wer" for e in rises)
    assert "## Word error rate: rise with adaptation" in (out / "results.md").read_text()
    # --samples defaults to 2: 2 speakers x 2 queries x (2 references + 2 systems x 4 cells) clips
    assert len(results["samples"]) == 2 * 2 * (2 + 2 * 4) and all((out / s["audio"]).is_file() for s in results["samples"])
    assert results["metrics"] == list(METRICS)  # the default judge (resemblyzer) and recogniser
    assert results["speaker_encoder"] == {"name": "resemblyzer", "version": importlib.metadata.version("resemblyzer")}
    assert truth["speaker_sim"]["mean"] == pytest.approx(1.0, abs=1e-5)
    ceiling = next(r for r in results["rows"] if r["system"] == "vocoder ceiling")["metrics"]["speaker_sim"]
    assert 0.0 < ceiling["mean"] < 1.0 and ceiling["n"] == 2 * 2
    assert results["provenance"]["packages"]["torch"] and "git_commit" in results["provenance"]
    table = (out / "results.md").read_text()
    assert "## mcd (lower is better)" in table and "| 2 | 2 |" in table
    assert "nan" not in table.split("## pesq")[0]  # every MCD cell has a number
    # the same seed gives the same numbers
    again = tmp_path / "again"
    assert main(["evaluate", "--checkpoint", paths[0], "--shots", "1", "--steps", "0", "--out", str(again),
                 "--no-progress", "fewshot.speaker_encoder=none", *overrides]) == 0
    first = next(r for r in results["rows"] if r["shots"] == 1 and r["steps"] == 0 and "multispeaker" in r["system"])
    unjudged = json.loads((again / "results.json").read_text())
    second = next(r for r in unjudged["rows"] if r["shots"] == 1)
    assert first["metrics"]["mcd"]["values"] == second["metrics"]["mcd"]["values"]
    assert unjudged["metrics"] == [m for m in METRICS if m != "speaker_sim"] and unjudged["speaker_encoder"] is None
    # --metrics: only those are scored (no judge without speaker_sim), with the same numbers
    chosen = tmp_path / "chosen"
    assert main(["evaluate", "--checkpoint", paths[0], "--shots", "1", "--steps", "0", "--out", str(chosen),
                 "--samples", "0", "--metrics", "mcd,wer", "--no-progress", *overrides]) == 0
    selected = json.loads((chosen / "results.json").read_text())
    assert selected["metrics"] == ["mcd", "wer"] and selected["speaker_encoder"] is None
    assert all(set(r["metrics"]) == {"mcd", "wer"} for r in selected["rows"])
    row = next(r for r in selected["rows"] if r["shots"] == 1)
    assert row["metrics"]["mcd"]["values"] == first["metrics"]["mcd"]["values"]
    assert row["metrics"]["wer"]["values"] == first["metrics"]["wer"]["values"]
    assert "## pesq" not in (chosen / "results.md").read_text() and "## wer" in (chosen / "results.md").read_text()
    # validation speakers, for choosing adaptation settings (here a rate) away from the test speakers
    val = tmp_path / "val"
    assert main(["evaluate", "--checkpoint", paths[0], "--shots", "1", "--steps", "1", "--out", str(val), "--split", "val",
                 "--adapt-lr", "0.003", "--samples", "0", "--no-progress", *overrides]) == 0
    on_val = json.loads((val / "results.json").read_text())
    assert on_val["split"] == "val" and on_val["checkpoints"][0]["adapt_lr"] == 0.003 and results["split"] == "test"
    assert len(on_val["speakers"]) == 2 and not set(on_val["speakers"]) & set(results["speakers"])
    outputs = execute_notebook("adaptation_curves.ipynb", {"LIGHTNING_TTS_RESULTS": str(out / "results.json")})
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("mcd" in o.get("text", "") for o in outputs)


def test_evaluate_bad_input(checkpoints, tmp_path: Path, capsys) -> None:
    paths, common, _ = checkpoints
    overrides = [c for c in common if c.startswith(("data.", "trainer.default"))]
    assert main(["evaluate", "--checkpoint", paths[0], "--shots", "1,x", "--out", str(tmp_path / "e"), *overrides]) == 2
    assert "--shots must be comma-separated integers" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", paths[0], "--shots", "40", "--out", str(tmp_path / "e"), *overrides]) == 1
    assert "no test speaker has 40 support" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", paths[0], "--out", "/nonexistent/dir/e", *overrides]) == 1
    assert main(["evaluate", "--checkpoint", paths[0], "--out", str(tmp_path / "w"), "fewshot.workers=-1", *overrides]) == 2
    assert "fewshot.workers must be >= 0 (0: one per CPU core), got -1" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # refused before anything was written


def test_worker_processes_share_the_speakers_and_change_no_number(checkpoints, tmp_path: Path) -> None:
    """Two worker processes (one speaker each) give, digit for digit, what one process with one thread
    gives: rows, paired differences and the kept samples, in the same order; progress once per cell."""
    paths, common, _ = checkpoints
    overrides = [c for c in common if c.startswith(("data.", "trainer.default"))]
    heard: list[str] = []
    shared = tmp_path / "shared"
    results = run_evaluation(load_config([], [*overrides, "fewshot.workers=2"]), [paths[1]], [2], [0, 2], shared,
                             progress=heard.append, samples=1)
    system = results["checkpoints"][0]["system"]
    assert heard == ["ground truth", "vocoder ceiling", f"{system} K=2 steps=0", f"{system} K=2 steps=2"]
    one = tmp_path / "one"
    subprocess.run([sys.executable, "-m", "lightning_tts", "evaluate", "--checkpoint", paths[1], "--shots", "2",
                    "--steps", "0,2", "--samples", "1", "--no-progress", "--out", str(one), "fewshot.workers=1",
                    *overrides], env={**os.environ, **{name: "1" for name in THREAD_VARIABLES}}, check=True,
                   capture_output=True)
    a, b = (json.loads((out / "results.json").read_text()) for out in (shared, one))
    assert len(a["speakers"]) == 2 and a["metrics"] == list(METRICS)
    for key in ("rows", "differences", "intelligibility", "samples", "speakers"):
        assert json.dumps(a[key], sort_keys=True) == json.dumps(b[key], sort_keys=True), key
    assert all((shared / s["audio"]).is_file() for s in a["samples"]) and len(a["samples"]) == 2 * (2 + 2)


@pytest.mark.parametrize("metrics, overrides, message", [
    ([], [], "needs at least one metric"),
    (["mcd", "loudness"], [], "unknown metric 'loudness'"),
    (["speaker_sim"], ["fewshot.speaker_encoder=none"], "speaker_sim needs a judge"),
    (["wer"], ["fewshot.wer=false"], "wer and cer need the recogniser"),
])
def test_a_bad_metric_selection_fails_in_one_line(metrics: list[str], overrides: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        check_metrics(metrics, load_config([], overrides))
    check_metrics(["mcd", "speaker_sim"], load_config([], []))  # the defaults allow both
