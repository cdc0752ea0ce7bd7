"""``python -m benchmarks --quick`` runs end to end and records every field the README table needs."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmarks_write_every_field(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out-dir", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = tmp_path.glob("*-quick.json")
    r = json.loads(result.read_text())
    assert {"cpu", "cores", "gpu", "torch"} <= set(r["machine"])
    steps = r["learner_steps"]
    for name in ("multispeaker", "maml_func_2nd", "maml_func_1st", "maml_higher_2nd", "maml_higher_1st", "mann"):
        assert steps[name]["median_s"] > 0 and steps[name]["min_s"] <= steps[name]["median_s"] <= steps[name]["max_s"]
    assert steps["maml_func_2nd"]["analytic_floor"] == 4.0 and steps["maml_func_1st"]["analytic_floor"] == 2.0
    assert steps["meta_gradient_max_abs_diff"] < 1e-3 and steps["peak_memory_mb"] > 0
    assert r["cache"]["workers_2"]["x_real_time"] > 0 and r["cache"]["naive"]["x_real_time"] > 0
    assert r["index"]["utterances"] > 0 and r["index"]["rss_mb"] > 0
    assert r["metrics"]["same_features_max_relative_difference"] < 0.05 and r["metrics"]["speedup"] > 0
    assert r["metrics"]["pesq_per_utterance"]["median_s"] > 0 and r["metrics"]["stoi_per_utterance"]["median_s"] > 0
    assert 0 < r["synthesis"]["acoustic_rtf"] < r["synthesis"]["with_griffin_lim_rtf"]
    evaluation = r["evaluation"]
    assert evaluation["one_process"]["seconds"] > 0 and evaluation["workers"]["seconds"] > 0
    assert evaluation["workers"]["processes"] == min(2, len(os.sched_getaffinity(0))) and evaluation["speedup"] > 0
    assert "skipped" in r["gpu"] or r["gpu"]
    table = (result.with_suffix(".md")).read_text()
    assert table.count("\n| ") >= 13 and "synthesis RTF" in table and "worker processes" in table
