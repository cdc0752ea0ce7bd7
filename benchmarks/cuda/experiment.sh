#!/usr/bin/env bash
# The embedded-default experiment (conf/experiment/fewshot_default.yaml) on a lent GPU machine: every system
# trains on the GPU (trainer.accelerator=auto), tuning and evaluation adapt and synthesise on it
# (the experiment's device=auto; one worker process per CPU core, capped at the number of speakers), the
# Resemblyzer judge scores on the CPU. Output under $OUT (log, report, the evaluation's results and the
# tuning choice). Run from the repository root:
#   OUT=some/folder bash benchmarks/cuda/experiment.sh [extra experiment overrides]
# Left out, to fit a lent machine's time: the 24-speaker evaluation (also_evaluate=[]) and PESQ (scored on
# the CPU whatever the device, and its package has no wheel for that machine's Python). The experiment
# resumes after a kill, so running this again on the same (warm) machine finishes what a time limit cut.
# As run on a lent H200 on 2026-11-27 (benchmarks/results/cuda-experiment-h200-2026-11-27.md): the limit stopped
# it while MAML trained, and the time left went to benchmarks/cuda/fewshot_default_three.yaml (tuning and
# evaluation of the three systems trained).
# That machine has torch and Lightning but not every dependency: .whl/ carries wheels of the rest
# (benchmarks/cuda/check.sh's, plus resemblyzer, webrtcvad-wheels, librosa, audioread, soxr, pooch,
# platformdirs, decorator, standard-aifc/-sunau), installed by the first line; where lightning_tts is
# pip-installed, that line is not needed.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi -L; nproc
python3 -c "import torch, resemblyzer, librosa; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 1
start=$(date +%s)
timeout "${LIMIT:-540}" python3 -m lightning_tts experiment --no-progress out=/tmp/experiment also_evaluate=[] \
  "evaluate.metrics=[mcd,stoi,f0_rmse,vuv_error,speaker_sim]" "$@" 2>&1 | grep -a -v "it/s\]" | tee -a "$OUT/log.txt"
rc=${PIPESTATUS[0]}
echo "experiment: rc=$rc, $(( $(date +%s) - start )) s in this call" | tee -a "$OUT/log.txt"
cp /tmp/experiment/report.md "$OUT/" 2>/dev/null
cp /tmp/experiment/evaluate/results.json "$OUT/evaluate-results.json" 2>/dev/null
cp /tmp/experiment/tune/choice.json "$OUT/choice.json" 2>/dev/null
python3 - <<'EOF' | tee -a "$OUT/log.txt"
import glob, json
for path in sorted(glob.glob("/tmp/experiment/stages/*.json")):
    record = json.load(open(path))
    print(path.rsplit("/", 1)[1], record.get("wall_seconds"), record.get("device", ""))
EOF
nvidia-smi --query-gpu=memory.used,memory.total --format=csv
exit $rc
