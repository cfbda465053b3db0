#!/usr/bin/env bash
# The next GPU session for issue 13: one call on one GPU, after scripts/gpu/gpu_data.py's parts were copied to DATA
# (DATA/train, DATA/val and DATA/pairs). What the model card's "what the next GPU-minutes should buy" asks for:
# one training at a time, batch 256 with bf16 (the learning rate scaled from batch 64), every training image.
#
#   scripts/gpu/train_next_gpu.sh DATA OUT_DIR [BICUBIC_MINUTES] [REAL_MINUTES] [HEAD_MINUTES]
#
# 1. bicubic: the shipped operator trained on (protocol degradation), then its uncertainty head retrained and
#    calibrated on it (an operator that changed needs a head of its own); version 2.2.0;
# 2. real: the shipped operator trained on with every sample realistically degraded and Sentinel-2-sharp
#    targets (--target-sigma 0.65, the recipe of the shipped real weights); version 2.2.0-real;
# 3. scores: bicubic on every 2nd DATA/val image at x2, x3, x4 and x8 beside the shipped weights; real on the real
#    pairs (as they are and co-registered) and on every 2nd val image at x3 and x4, protocol and realistic LR.
# OUT_DIR receives weights, manifests, logs and JSON as they are written, so a cut-off call loses only what was
# running. DEVICE=cpu BATCH=4 runs the same steps on the CPU (to check the script first; minutes like 0.1).
set -uo pipefail
data=$1 out=$2 bicubic_minutes=${3:-3.5} real_minutes=${4:-2.5} head_minutes=${5:-1}
device=${DEVICE:-cuda} batch=${BATCH:-256}
weights=hndsr_model/weights
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"

train() {  # name, then train.py options
  local name=$1
  shift
  python3 -m hndsr_model.train --data "$data/train" --device "$device" --arch v2 --batch "$batch" --bf16 \
    --lr-reference-batch 64 --denoiser-iters 0 --operator-iters 1000000 --log-every 200 --checkpoint-every 1000 \
    --checkpoint-dir "$out/checkpoints-$name" --out "$out/hndsr-$name.safetensors" "$@" > "$out/train-$name.log" 2>&1
}

evaluate() {  # name, then evaluate.py options
  local name=$1
  shift
  python3 -m hndsr_model.evaluate --device "$device" --json "$out/eval-$name.json" "$@" > "$out/eval-$name.log" 2>&1
}

train 2.2.0 --init "$weights/hndsr.safetensors" --lr 2e-4 --seed 50 --operator-minutes "$bicubic_minutes" \
  --uncertainty-iters 1000000 --uncertainty-minutes "$head_minutes" --version 2.2.0
evaluate val-2.2.0 --data "$data/val" --every 2 --scales 2 3 4 8 \
  --weights "$out/hndsr-2.2.0.safetensors" "$weights/hndsr.safetensors"

train 2.2.0-real --init "$weights/hndsr-real.safetensors" --lr 1e-4 --seed 51 --realistic 1.0 \
  --target-sigma 0.65 --operator-minutes "$real_minutes" --version 2.2.0-real
real=("$out/hndsr-2.2.0-real.safetensors" "$weights/hndsr-real.safetensors" "$weights/hndsr.safetensors")
evaluate pairs-2.2.0-real --real-pairs "$data/pairs" --weights "${real[@]}"
evaluate pairs-registered-2.2.0-real --real-pairs "$data/pairs" --register 4 --weights "${real[@]}"
evaluate val-2.2.0-real --data "$data/val" --every 2 --scales 3 4 --weights "${real[@]}"
evaluate val-realistic-2.2.0-real --data "$data/val" --every 2 --scales 3 4 --degradation realistic --seed 0 \
  --weights "${real[@]}"
tail -n 3 "$out"/*.log
