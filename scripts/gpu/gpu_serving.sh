#!/usr/bin/env bash
# Issue 9's serving benchmark on a lent GPU machine, in one device call (docs/throughput.md).
#
# Here, first: `.venv/bin/python scripts/gpu/gpu_wheels.py` (the server's wheels for Python 3.12 into .whl/, ~49 MiB;
# with the checkout that is just under a call's 64 MiB). Then one device call (about 4 minutes on an H200):
#
#   run(command="bash scripts/gpu/gpu_serving.sh", carry=[".whl"], timeout_s=480)
#
# It installs the wheels beside the machine's PyTorch, then runs, each against the real `bentoml serve` on the
# GPU: the full serving benchmark with the default settings (model only, HTTP/in-process ratios, 1-64 clients
# on /upscale and /infer, in-process threads alike, the 8192x8192 x2 scene), then 16-64 clients again with more
# inference slots (MAX_CONCURRENT), where the micro-batcher has more requests' tiles to batch. Logs go to $OUT
# as they are written, so a call cut short keeps what ran. WHEELS, DEVICE and PYTHON rehearse it on the CPU:
#
#   WHEELS=/tmp/whl311 DEVICE=cpu PYTHON=/tmp/bare/bin/python bash scripts/gpu/gpu_serving.sh --quick
#
# The GPU's utilisation is sampled throughout (gpu-dmon.log). `--workers` runs the follow-up instead: 1, 32 and
# 64 clients against 2, 4 and 8 API worker processes on the one GPU (BentoML's `workers`, set through BENTOML_CONFIG_OVERRIDES; each worker has its own model, slots and
# micro-batcher), then 32 clients against one worker under py-spy (its wheel added to .whl/ for that call:
# `pip download py-spy` as in gpu_wheels.py), every process of the run sampled, once all threads and once only
# the thread holding each process's GIL, as collapsed stacks (profile-*.txt). `--slots` then splits 32 clients'
# latency into the wait for a slot and the server's inference: 1 and 32 clients with the default 4 slots, and 32
# clients with 32 slots (PNG, PNG without the micro-batcher, JPEG).
set -uo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-}
case $mode in
  ""|--quick|--workers|--slots) ;;
  *) echo "usage: $0 [--quick | --workers | --slots]" >&2; exit 2 ;;
esac
out=${OUT:-/tmp/hndsr-gpu-serving} wheels=${WHEELS:-.whl} device=${DEVICE:-cuda} python=${PYTHON:-python3}
site=$(mktemp -d /tmp/hndsr-site-XXXX)
mkdir -p "$out"
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl || exit
# The benchmark's in-process figures under the server's OpenMP policy (the Bento's envs give the server PASSIVE).
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1 BENTOML_DO_NOT_TRACK=True BENTOML_HOME="$site/bentoml" \
  OMP_WAIT_POLICY=PASSIVE
if [[ $mode == --quick ]]; then  # the rehearsal: every step, few requests
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
# The GPU's utilisation and memory once a second through every step: is the card busy while the clients wait?
nvidia-smi dmon -s um -d 1 > "$out/gpu-dmon.log" 2>&1 &
dmon=$!
status=0
bench() {  # log name, then benchmarks serving options; a failure is remembered, and the next step still runs
  local name=$1
  shift
  "$python" -m benchmarks serving --device "$device" "$@" 2>&1 | tee "$out/$name.log" || status=1
}
profile() {  # log name; samples the benchmark, its server and the server's workers while the clients run
  local log=$out/$1.log pid tries=600
  until grep -q "server up" "$log" 2>/dev/null; do  # 5 minutes at most: a server that never came up
    (( --tries )) || return
    sleep 0.5
  done
  sleep 3  # past the warm-up request, into the steady load
  pid=$(pgrep -n -f "benchmarks serving")
  for kind in threads gil; do  # every running thread; then only the thread holding each process's GIL
    "$site/bin/py-spy" record --nonblocking --subprocesses -r 100 -d 8 -f raw -o "$out/profile-$kind.txt" \
      --pid "$pid" $([[ $kind == gil ]] && echo --gil) >> "$out/py-spy.log" 2>&1
  done
  "$python" scripts/gpu/profile_roles.py "$out"/profile-{threads,gil}.txt --seconds 8 --rate 100 | tee "$out/roles.log"
}
if [[ $mode == --workers ]]; then
  for workers in 2 4 8; do
    bench "serving-workers-$workers" --clients 1 32 64 --in-process-threads --requests-per-client 10 \
      --ratio-repeats 0 --repeats 3 --scene-size 0 \
      --server-env "BENTOML_CONFIG_OVERRIDES={\"services\": {\"hndsr\": {\"workers\": $workers}}}"
  done
  profile serving-profile &
  profiler=$!
  bench serving-profile --clients 32 --endpoints upscale --in-process-threads --requests-per-client 60 \
    --ratio-repeats 0 --repeats 3 --scene-size 0
  wait "$profiler"
elif [[ $mode == --slots ]]; then
  few=(--in-process-threads --requests-per-client 20 --ratio-repeats 0 --repeats 3 --scene-size 0 --endpoints upscale)
  bench slots-4 --clients 1 32 "${few[@]}"
  bench slots-32 --clients 32 "${few[@]}" --server-env MAX_CONCURRENT=32
  bench slots-32-no-batcher --clients 32 "${few[@]}" --server-env MAX_CONCURRENT=32 BATCH_WAIT_MS=0
  bench slots-32-jpeg --clients 32 "${few[@]}" --upscale-format jpeg --server-env MAX_CONCURRENT=32
else
  bench serving-default "${full[@]}"
  for slots_n in "${counts[@]}"; do
    bench "serving-max-concurrent-$slots_n" "${slots[@]}" --server-env "MAX_CONCURRENT=$slots_n"
  done
fi
kill "$dmon" 2>/dev/null
rm -rf "$site"
exit "$status"
