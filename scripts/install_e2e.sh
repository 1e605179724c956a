#!/usr/bin/env bash
# Install what the end-to-end browser test (tests/e2e) needs, idempotently and
# without asking anything:
#   - Debian's chromium (/usr/bin/chromium), if it is not there yet;
#   - JupyterLab 4, Jupyter Notebook 7 and Playwright for Python into the project's venv, at
#     the versions of constraints.txt (KURA_CONSTRAINTS=/dev/null: the newest allowed).
# Playwright's pip package carries its own driver; the test drives Debian's
# chromium through executable_path. Never run `playwright install`: it downloads
# a browser build, which this machine cannot fetch.
#
# Usage: scripts/install_e2e.sh [VENV]     (default: ./.venv)
set -euo pipefail
export CI=true DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

venv="${1:-./.venv}"
started=$SECONDS

if ! command -v chromium >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo -n"; fi
    $sudo apt-get update -q </dev/null
    $sudo apt-get install -y -q --no-install-recommends chromium </dev/null
fi
chromium --version </dev/null 2>/dev/null || true  # Debian's wrapper may print a harmless "[:" warning

if [ ! -x "$venv/bin/python" ]; then
    echo "install_e2e: no python at $venv/bin/python (make the project venv first)" >&2
    exit 1
fi
have_packages() {
    "$venv/bin/python" - <<'PY' 2>/dev/null
from importlib.metadata import version
assert version("jupyterlab").startswith("4.") and version("notebook").startswith("7.")
assert version("playwright")
PY
}
if ! have_packages; then
    # uv where scripts/install_python.sh put it into the venv, else pip; the versions of constraints.txt
    installer=("$venv/bin/python" -m pip install -q)
    [ -x "$venv/bin/uv" ] && installer=("$venv/bin/uv" pip install --quiet --python "$venv/bin/python" --compile-bytecode)
    "${installer[@]}" -c "${KURA_CONSTRAINTS:-$(dirname "${BASH_SOURCE[0]}")/../constraints.txt}" "jupyterlab>=4,<5" "notebook>=7,<8" "playwright>=1.40" </dev/null
fi
have_packages || { echo "install_e2e: jupyterlab 4, notebook 7 or playwright missing after pip install" >&2; exit 1; }
"$venv/bin/python" -c "from importlib.metadata import version as v; print('jupyterlab', v('jupyterlab'), 'notebook', v('notebook'), 'playwright', v('playwright'))"

echo "install_e2e: done in $((SECONDS - started)) s"
