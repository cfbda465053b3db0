#!/usr/bin/env bash
# Model v3 on a GPU (issue 29, items 3-4): one call on one GPU, after scripts/gpu/gpu_data.py's parts were copied to
# DATA (DATA/train, DATA/val and DATA/pairs).
#
#   scripts/gpu/train_v3_gpu.sh DATA OUT_DIR [COMPARE_MINUTES] [V3_MINUTES] [DENOISER_MINUTES] [HEAD_MINUTES]
#
# 1. the equal-compute comparison from scratch, three seeds: 2.1.0's network, v3 and v3 without spectral mixing,
#    COMPARE_MINUTES of GPU time each (python -m benchmarks trunks; every 2nd val image, x2-x4);
# 2. v3 from scratch with every stage the service needs: the operator for V3_MINUTES at batch 256 with bf16 (the
#    learning rate scaled from batch 64) until its loss flattens (the log has the curve), the denoiser on its
#    residual, then the uncertainty head and its calibration; version 3.0.0;
# 3. scores: every val image at x2-x8 beside the shipped weights (with and without the consistency projection), the
#    real pairs, and the x4 256x256 tile time. Ship it only where it beats 2.1.0 at every scale at no more CPU time
#    (the model card's "v3 candidate").
# OUT_DIR receives weights, manifests, logs and JSON as they are written. DEVICE=cpu BATCH=4 runs the same steps on
# the CPU (to check the script first; minutes like 0.05).
set -uo pipefail
data=$1 out=$2 compare_minutes=${3:-5} v3_minutes=${4:-20} denoiser_minutes=${5:-5} head_minutes=${6:-1.5}
device=${DEVICE:-cuda} batch=${BATCH:-256}
weights=hndsr_model/weights
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"

python3 -m benchmarks trunks --data "$data/train" --val "$data/val" --device "$device" --batch "$batch" \
  --lr-reference-batch 64 --minutes "$compare_minutes" --every 2 --json "$out/trunks.json" > "$out/trunks.log" 2>&1

python3 -m hndsr_model.train --data "$data/train" --device "$device" --arch v3 --batch "$batch" --bf16 \
  --lr-reference-batch 64 --seed 60 --operator-iters 1000000 --operator-minutes "$v3_minutes" \
  --denoiser-iters 1000000 --denoiser-minutes "$denoiser_minutes" \
  --uncertainty-iters 1000000 --uncertainty-minutes "$head_minutes" --log-every 200 --checkpoint-every 1000 \
  --checkpoint-dir "$out/checkpoints-3.0.0" --out "$out/hndsr-3.0.0.safetensors" --version 3.0.0 \
  > "$out/train-3.0.0.log" 2>&1 &&
python3 -m hndsr_model.evaluate --device "$device" --data "$data/val" --scales 2 3 4 5 6 7 8 --consistency both \
  --time-tile 5 --weights "$out/hndsr-3.0.0.safetensors" "$weights/hndsr.safetensors" \
  --json "$out/eval-val-3.0.0.json" > "$out/eval-val-3.0.0.log" 2>&1 &&
python3 -m hndsr_model.evaluate --device "$device" --real-pairs "$data/pairs" --consistency both \
  --weights "$out/hndsr-3.0.0.safetensors" "$weights/hndsr.safetensors" \
  --json "$out/eval-pairs-3.0.0.json" > "$out/eval-pairs-3.0.0.log" 2>&1
tail -n 3 "$out"/*.log
