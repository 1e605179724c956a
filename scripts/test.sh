#!/usr/bin/env bash
# Install everything the test suite needs into ./.venv (the package with its test and
# local-model extras, JupyterLab, Playwright, Debian's Chromium and redis-server), then run it all:
# unit and integration tests, the example notebooks (nbval), the local model, the browser.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m "not e2e and not local_llm"
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# llama-cpp-python compiles from source: a portable build without the multimodal part.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF}"
export LITELLM_LOCAL_MODEL_COST_MAP=True   # litellm's bundled prices: no network, same every run

step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

step "python environment"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,local]"

step "browser test dependencies"
bash scripts/install_e2e.sh .venv

step "services the tests need"
bash scripts/install_redis.sh   # redis-server: the Redis tests start their own on a free port

step "tests"
.venv/bin/python -m pytest "$@"
