#!/usr/bin/env bash
# Issue 8's GPU session, as it ran: one call on one GPU, after the training set was copied to TRAIN_DIR.
#
#   scripts/gpu/train_uncertainty_gpu.sh TRAIN_DIR VAL_DIR OUT_DIR [DENOISER_MINUTES] [HEAD_MINUTES]
#
# 1. from the shipped weights (operator frozen): the residual denoiser trained on, on v2's residual, with all
#    840 images, then the uncertainty head trained and calibrated per scale; exported as 2.1.0;
# 2. on VAL_DIR: the diffusion table (x4, ddim_steps 0-16, seed 0) of the new and the old weights, and the
#    uncertainty scores at x4 with 8 steps (8 samples), in full float32 (the scores at ddim_steps 0, every
#    scale, are CPU work: `python -m hndsr_model.evaluate --uncertainty` after the call).
# OUT_DIR receives the weights, manifests, logs and JSON as they are written, so a cut-off call loses
# only what was running. DEVICE=cpu runs the same steps on the CPU (to check the script first).
set -uo pipefail
train=$1 val=$2 out=$3 denoiser_minutes=${4:-5} head_minutes=${5:-1.5}
device=${DEVICE:-cuda}
shipped=hndsr_model/weights/hndsr.safetensors
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"

python3 -m hndsr_model.train --data "$train" --device "$device" --arch v2 --init "$shipped" --batch 128 \
  --lr 3e-4 --seed 30 --operator-iters 0 --denoiser-minutes "$denoiser_minutes" --denoiser-iters 1000000 \
  --uncertainty-minutes "$head_minutes" --uncertainty-iters 1000000 --log-every 200 --checkpoint-every 1000 \
  --checkpoint-dir "$out/checkpoints" --version 2.1.0 --out "$out/hndsr-2.1.0.safetensors" > "$out/train.log" 2>&1
evaluate() {  # name, then evaluate.py options
  local name=$1
  shift
  python3 -m hndsr_model.evaluate --data "$val" --device "$device" --json "$out/eval-$name.json" "$@" \
    > "$out/eval-$name.log" 2>&1
}
evaluate ddim-2.1.0 --weights "$out/hndsr-2.1.0.safetensors" --scales 4 --ddim-steps 0 1 2 4 8 16
evaluate uncertainty-x4-ddim8 --weights "$out/hndsr-2.1.0.safetensors" --uncertainty --scales 4 --ddim-steps 8
evaluate ddim-2.0.0 --weights "$shipped" --scales 4 --ddim-steps 0 1 2 4 8 16
tail -n 4 "$out"/*.log
