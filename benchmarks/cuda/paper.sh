#!/usr/bin/env bash
# See check.sh for the wheel line. Ran on a lent H200 on 2026-11-26 until its device time ran out (results md).
# Paper-scale preset on one GPU through conf/trainer/gpu.yaml (DDP strategy, NCCL, bf16-mixed): seconds per
# step from two fits of different lengths (the difference removes start-up, corpus and validation costs).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
DATA="data.root=/tmp/corpus data.cache_dir=/tmp/cache data.synthetic.speakers=20 data.synthetic.utterances=12"
python3 -m lightning_tts synthetic-corpus --out /tmp/corpus --speakers 20 --utterances 12 --no-progress > /dev/null 2>&1
python3 -m lightning_tts preprocess --no-progress $DATA > /dev/null 2>&1
for learner in multispeaker maml; do
  for steps in 10 60; do
    t0=$(date +%s.%N)
    python3 -m lightning_tts fit --no-progress --config conf/model/paper.yaml --config conf/trainer/gpu.yaml \
      --config conf/learner/$learner.yaml $DATA trainer.max_steps=$steps trainer.val_check_interval=1000 \
      trainer.limit_val_batches=1 fewshot.every=0 projection.every=0 run_dir=/tmp/runs/$learner-$steps > /tmp/$learner-$steps.log 2>&1
    rc=$?
    echo "$learner $steps steps: exit $rc, $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s"
    [ $rc -eq 0 ] || tail -5 /tmp/$learner-$steps.log
  done
done
grep -h "strategy\|precision\|speakers train" /tmp/multispeaker-10.log | head -3
nvidia-smi --query-gpu=name,memory.used --format=csv
