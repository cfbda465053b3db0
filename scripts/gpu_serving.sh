#!/usr/bin/env bash
# Issue 9's serving benchmark on a lent GPU machine, in one device call (docs/throughput.md).
#
# Here, first: `.venv/bin/python scripts/gpu_wheels.py` (the server's wheels for Python 3.12 into .whl/, ~49 MiB;
# with the checkout that is just under a call's 64 MiB). Then one device call:
#
#   run(command="bash scripts/gpu_serving.sh", carry=[".whl"], timeout_s=540)
#
# It installs the wheels beside the machine's PyTorch, then runs, each against the real `bentoml serve` on the
# GPU: the full serving benchmark with the default settings (model only, HTTP/in-process ratios, 1-64 clients
# on /upscale and /infer, in-process threads alike, the 8192x8192 x2 scene), then 16-64 clients again with more
# inference slots (MAX_CONCURRENT), where the micro-batcher has more requests' tiles to batch. Logs go to $OUT
# as they are written, so a call cut short keeps what ran. WHEELS, DEVICE and PYTHON rehearse it on the CPU:
#
#   WHEELS=/tmp/whl311 DEVICE=cpu PYTHON=/tmp/bare/bin/python bash scripts/gpu_serving.sh --quick
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/hndsr-gpu-serving} wheels=${WHEELS:-.whl} device=${DEVICE:-cuda} python=${PYTHON:-python3}
site=$(mktemp -d /tmp/hndsr-site-XXXX)
mkdir -p "$out"
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl || exit
# The benchmark's in-process figures under the server's OpenMP policy (the Bento's envs give the server PASSIVE).
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1 BENTOML_DO_NOT_TRACK=True BENTOML_HOME="$site/bentoml" \
  OMP_WAIT_POLICY=PASSIVE
if [[ ${1:-} == --quick ]]; then  # the rehearsal: every step, few requests
  full=(--clients 1 4 --in-process-threads 1 --ratio-repeats 2 --repeats 2 --scene-size 0)
  slots=(--clients 4 --in-process-threads --ratio-repeats 0 --repeats 1 --scene-size 0)
  counts=(4)
else
  full=(--clients 1 4 16 32 64 --in-process-threads 1 4 16 32 --requests-per-client 10 --ratio-repeats 30
        --repeats 20)
  slots=(--clients 16 32 64 --in-process-threads --requests-per-client 10 --ratio-repeats 0 --repeats 5
         --scene-size 0)
  counts=(16 32)
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null; nproc; uptime
  "$python" -m pip check; } 2>&1 | tee "$out/machine.log"  # pip check: the carried wheels against the machine's
status=0
bench() {  # log name, then benchmark.py options; a failure is remembered, and the next step still runs
  local name=$1
  shift
  "$python" scripts/benchmark.py --serving --device "$device" "$@" 2>&1 | tee "$out/$name.log" || status=1
}
bench serving-default "${full[@]}"
for slots_n in "${counts[@]}"; do
  bench "serving-max-concurrent-$slots_n" "${slots[@]}" --server-env "MAX_CONCURRENT=$slots_n"
done
rm -rf "$site"
exit "$status"
