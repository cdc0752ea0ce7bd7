#!/usr/bin/env bash
# The benchmark's GPU section (benchmarks/run.py: gpu_section) and the same steps on this machine's CPU;
# writes $OUT/gpu_section.json. See check.sh for the wheel line.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
timeout 270 python3 - <<'PY'
import json, os, tempfile
from pathlib import Path
from benchmarks.run import corpus, gpu_section, learner_steps
with tempfile.TemporaryDirectory() as tmp:
    root = corpus(Path(tmp), speakers=12, utterances=30)
    report = {"gpu_section": gpu_section(root, Path(tmp), repeats=5)}
    print(json.dumps(report, indent=1))
    Path(os.environ["OUT"], "gpu_section.json").write_text(json.dumps(report, indent=1))
    report["cpu_16_cores"] = learner_steps(root, Path(tmp), 3, inner_steps=3, shots=5)  # the same machine's CPU, for the ratio
    print(json.dumps(report["cpu_16_cores"], indent=1))
Path(os.environ["OUT"], "gpu_section.json").write_text(json.dumps(report, indent=1))
PY
