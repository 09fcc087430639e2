#!/usr/bin/env bash
# One command that shows whether the training path keeps a GPU busy (issue #15). On a CUDA machine it
#   1. prepares a few thousand pairs (LASOT=DIR, else ../shared/data/train_real, else synthetic videos),
#   2. runs benchmarks/data_pipeline.py --device cuda (loader pairs/s, nvjpeg images/s),
#   3. trains a random-initialised ViT-S/16 in configs/base.yaml's shape (128/256 px crops, neck 256) for a
#      fixed number of steps with AMP and torch.compile, through the real Trainer and shard stream,
#      and prints pairs/s per GPU and the host synchronisations per step,
# in under 8 minutes (each stage has a timeout). Without CUDA (or with --cpu) it runs the same stages on
# the CPU with a tiny model and tiny crops: a check that the script and its code paths work, no speed.
#   bash benchmarks/gpu_check.sh [--cpu]
# Environment: PYTHON (default .venv/bin/python, else python3), LASOT, BATCH (256), WORKERS (8),
# STEPS (300), WARMUP (40), PAIRS_PER_SEQUENCE, KEEP=1 keeps the work folder.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DEVICE=cpu
if [ "${1:-}" != "--cpu" ] && "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  DEVICE=cuda
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/siamtool-gpu-check.XXXXXX")
cleanup() { if [ "${KEEP:-0}" = 1 ]; then echo "work folder kept: $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
START=$SECONDS
stage() { echo; echo "== $1 ($((SECONDS - START)) s)"; }

if [ "$DEVICE" = cuda ]; then
  BATCH=${BATCH:-256}; WORKERS=${WORKERS:-8}; STEPS=${STEPS:-300}; WARMUP=${WARMUP:-40}
  PAIRS=${PAIRS_PER_SEQUENCE:-64}; SETS=(); PREPARE_SETS=(); SYNTH_SIZE="640, 360"
  "$PYTHON" -c 'import torch; print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
else
  echo "no CUDA here: CPU fallback with a tiny model (checks the stages, measures nothing about a GPU)"
  BATCH=${BATCH:-8}; WORKERS=${WORKERS:-1}; STEPS=${STEPS:-3}; WARMUP=${WARMUP:-1}
  PAIRS=${PAIRS_PER_SEQUENCE:-16}; SYNTH_SIZE="192, 144"
  SETS=(--set data.template_size=32 --set data.search_size=64 --set model.tiny=true --set model.dim=32
        --set model.heads=2 --set train.val_samples=16)
  PREPARE_SETS=(--set data.template_size=32 --set data.search_size=64)  # prepare reads only data.*
fi

stage "1. data"
SRC=${LASOT:-}
if [ -z "$SRC" ] && [ "$DEVICE" = cuda ] && [ -d ../shared/data/train_real ]; then SRC=../shared/data/train_real; fi
if [ -z "$SRC" ]; then
  SRC=$WORK/lasot
  "$PYTHON" -c "from siamtool.data.synthetic import make_synthetic_lasot as m; m('$SRC', classes=('cat', 'dog', 'car', 'bird'), seqs_per_class=4 if '$DEVICE' == 'cuda' else 1, n_frames=60 if '$DEVICE' == 'cuda' else 24, size=($SYNTH_SIZE))"
fi
echo "sequences from $SRC"
timeout 150 "$PYTHON" -m siamtool prepare --lasot "$SRC" --out "$WORK/shards" --split all \
  --pairs-per-sequence "$PAIRS" ${PREPARE_SETS[@]+"${PREPARE_SETS[@]}"}

stage "2. data pipeline on $DEVICE"
timeout 100 "$PYTHON" benchmarks/data_pipeline.py --shards "$WORK/shards" --device "$DEVICE" --sections 25 \
  --workers "$WORKERS" --batches 30 --batch-size "$BATCH" --repeats 1 --threads 4 ${SETS[@]+"${SETS[@]}"} \
  | tee "$WORK/pipeline.txt"

stage "3. training steps on $DEVICE"
timeout 240 "$PYTHON" benchmarks/train_speed.py --gpu-run --shards "$WORK/shards" --device "$DEVICE" \
  --batch-size "$BATCH" --workers "$WORKERS" --steps "$STEPS" --warmup "$WARMUP" ${SETS[@]+"${SETS[@]}"} \
  | tee "$WORK/train.txt"

stage "summary"
grep -h "^GPU_CHECK" "$WORK/pipeline.txt" "$WORK/train.txt" | sed 's/^GPU_CHECK /  /'
echo "total $((SECONDS - START)) s (budget 480 s); goal on one H100-class GPU: pairs_per_s_per_gpu >= 10000"
