#!/usr/bin/env bash
# The README's main job: run example_notebooks/quickstart.ipynb headless against the
# bundled local model (SmolLM2-135M, no API key, no network beyond the package
# registries), twice, printing what each run did; the second run must be served
# wholly from the cache. Executed notebooks and HTML copies land in runs/.
#
# Installs the project with its [local] and [test] extras into the venv first if they
# are missing (scripts/install_python.sh: the versions of constraints.txt, a prebuilt
# llama.cpp wheel where one fits, else a compile from source).
#
# Usage: scripts/main_job.sh [run_quickstart.py options, e.g. --backend loopback]
#        VENV=path PYTHON=python3.11 scripts/main_job.sh
set -euo pipefail
export LITELLM_LOCAL_MODEL_COST_MAP=True PIP_DISABLE_PIP_VERSION_CHECK=1

cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv="${VENV:-./.venv}"
started=$SECONDS

ready='import nbclient, nbconvert, ipykernel, kura_magic.local as l; l.find_weights()'
if ! { [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$ready" >/dev/null 2>&1; }; then
    bash scripts/install_python.sh "$venv"
fi
status=0
"$venv/bin/python" scripts/run_quickstart.py "$@" || status=$?
echo "main_job: done in $((SECONDS - started)) s"
exit "$status"
