#!/usr/bin/env bash
# Install everything the test suite needs into ./.venv (the package with its test and
# local-model extras at the versions of constraints.txt, JupyterLab, Playwright, Debian's
# Chromium and redis-server), then run it all on both cores (pytest-xdist, one test file
# per worker at a time): unit and integration tests, the example notebooks (nbval), the
# local model, the browser. Each phase says how long it took.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m "not e2e and not local_llm"
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export LITELLM_LOCAL_MODEL_COST_MAP=True   # litellm's bundled prices: no network, same every run

started=$SECONDS
phase_started=$SECONDS
phase=""
step() {
    [ -z "$phase" ] || printf '== %s: %d s\n' "$phase" "$((SECONDS - phase_started))"
    phase="$1"
    phase_started=$SECONDS
    [ -z "$phase" ] || printf '\n== %s (%s)\n' "$phase" "$(date +%T)"
}

step "install: python environment"
bash scripts/install_python.sh .venv

step "install: browser test dependencies"
bash scripts/install_e2e.sh .venv

step "services the tests need"
bash scripts/install_redis.sh   # redis-server: the Redis tests start their own on a free port

step "lint and types"
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy

step "tests"
status=0
.venv/bin/python -m pytest -n "${KURA_TEST_WORKERS:-2}" --dist loadfile --durations=25 "$@" || status=$?
step ""
echo "== total: $((SECONDS - started)) s"
exit "$status"
