#!/usr/bin/env bash
# Model v2's GPU trainings (issue 13), as they ran: one call on a single GPU.
#
#   scripts/gpu/train_v2_gpu.sh TRAIN_DIR VAL_DIR OUT_DIR [MAIN_MINUTES] [ABLATION_MINUTES]
#
# 1. five trainings side by side, all from v1's weights, all 840 training images, batch 64:
#    v2 (protocol bicubic) and v2-real (realistic degradations) for MAIN_MINUTES, and the ablation
#    (v1 trained on, v2, v2 without spectral mixing) for ABLATION_MINUTES each, with one seed, so the
#    three ablation runs share the same budget and the same GPU contention;
# 2. every result evaluated on every 2nd image of VAL_DIR (the protocol), the ablation runs as soon as
#    they finish; the model card's full tables come from `python -m hndsr_model.evaluate` on the CPU.
# OUT_DIR receives two tarballs (weights, manifests, logs, evaluation JSON).
# DEVICE=cpu runs the same steps on the CPU (to check the script before GPU time is spent); WORK names
# the working folder (default: a new temporary one); EVAL_TIMEOUT bounds each evaluation (seconds).
set -uo pipefail
train=$1 val=$2 out=$3 main_minutes=${4:-5.5} ablation_minutes=${5:-2.5}
device=${DEVICE:-cuda}
v1=hndsr_model/weights/hndsr-1.0.0.safetensors
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

train() {  # name, minutes, then train.py options
  local name=$1 minutes=$2
  shift 2
  python3 -m hndsr_model.train --data "$train" --device "$device" --init "$v1" --batch 64 \
    --operator-minutes "$minutes" --operator-iters 1000000 --denoiser-iters 0 --log-every 200 \
    --checkpoint-every 1000 --checkpoint-dir "$work/$name" --out "$work/$name.safetensors" "$@" \
    > "$work/$name.log" 2>&1
}

evaluate() {  # name, then evaluate.py options
  local name=$1
  shift
  timeout "${EVAL_TIMEOUT:-3600}" python3 -m hndsr_model.evaluate --data "$val" --device "$device" "$@" \
    --weights "$work/$name.safetensors" --json "$work/eval-$name.json" > "$work/eval-$name.log" 2>&1
}

(train v2 "$main_minutes" --arch v2 --lr 2e-4 --seed 10 --version 2.0.0 && evaluate v2 --every 2 --scales 2 3 4 8) &
(train v2-real "$main_minutes" --arch v2 --lr 3e-4 --realistic 1.0 --seed 11 --version 2.0.0-real \
  && evaluate v2-real --every 2 --scales 2 3 4 8) &
for arch in v1 v2 v2-nospectral; do
  options=(--arch "${arch%-nospectral}")
  [[ $arch == *-nospectral ]] && options+=(--no-spectral)
  (train "ablation-$arch" "$ablation_minutes" "${options[@]}" --lr 2e-4 --seed 12 --version "ablation-$arch" \
    && evaluate "ablation-$arch" --every 2 --scales 2 4 8) &
done
wait
tar -C "$work" -cf "$out/v2.tar" $(cd "$work" && ls -d v2.* v2-real.* eval-v2.* eval-v2-real.* 2>/dev/null)
tar -C "$work" -cf "$out/ablation.tar" $(cd "$work" && ls -d ablation-*.safetensors ablation-*.json ablation-*.log eval-ablation-* 2>/dev/null)
tail -n 3 "$work"/*.log
