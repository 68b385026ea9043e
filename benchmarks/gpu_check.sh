#!/usr/bin/env bash
# `make gpu-check`: on a bare GPU machine, install what is missing from the wheels carried in .whl/ (no network,
# no build), then run benchmarks/gpu_check.py with this checkout on the path. Arguments go to the script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/cliplabel-site .whl/*.whl
    export PYTHONPATH=/tmp/cliplabel-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
exec "$PY" benchmarks/gpu_check.py "$@"
