# Shared set-up for scripts/serve, scripts/test and scripts/build (sourced, not run).
# Creates .venv in the repo root if missing and installs the project into it (idempotent, offline-friendly:
# torch is pinned to the CPU wheel these machines carry).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export BENTOML_DO_NOT_TRACK=True
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [[ ! -x .venv/bin/python ]]; then
  echo "creating .venv" >&2
  python3 -m venv .venv
fi
PY="$ROOT/.venv/bin/python"
# The extras to install: scripts/test adds ray (hndsr batch's tests start a Ray cluster); serving needs neither.
extras="${HNDSR_EXTRAS:-serve,test}"
stamp=".venv/.hndsr-installed-${extras//,/-}"
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "installing hndsr[$extras] into .venv" >&2
  "$PY" -m pip install -q "torch==2.13.0"
  "$PY" -m pip install -q -e ".[$extras]"
  touch "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
