"""The loopback LLM server, driven by real clients (litellm, openai, httpx); no mocks."""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network for the price map

import httpx
import litellm
import openai
import pytest
from pydantic import BaseModel, Field

from kura_magic.testing import LoopbackLLM, RecordedRequest, embedding_for, reply_for

REPO = Path(__file__).resolve().parents[1]
HTTP = httpx.Client(timeout=10)  # one pool: a fresh client per request costs an SSL context each


@pytest.fixture
def server() -> Iterator[LoopbackLLM]:
    with LoopbackLLM() as running:
        yield running


def chat(server: LoopbackLLM, content: str, **params: object) -> litellm.ModelResponse:
    """One call exactly as the product makes it, with retries off."""
    return litellm.completion(
        model="openai/gpt-4o-mini", api_base=server.url, api_key="sk-test",
        messages=[{"role": "user", "content": content}], num_retries=0, max_retries=0, **params)


def post(server: LoopbackLLM, path: str, body: dict) -> httpx.Response:
    return HTTP.post(server.url + path, json=body)


def wait_until(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


# ---------------------------------------------------------------- chat through litellm


def test_litellm_completion_gets_the_deterministic_reply_usage_and_a_price(server: LoopbackLLM) -> None:
    messages = [{"role": "user", "content": "My parcel never arrived and nobody answers the phone"}]
    resp = chat(server, messages[0]["content"])

    assert resp.choices[0].message.content == reply_for(messages)
    assert resp.choices[0].message.content.startswith("Summary: My parcel never arrived")
    assert resp.usage.prompt_tokens == 9 and resp.usage.completion_tokens > 0
    assert litellm.completion_cost(completion_response=resp) > 0
    assert server.chat_requests[0].model == "gpt-4o-mini"
    assert server.chat_requests[0].messages == messages


def test_equal_prompts_give_equal_replies_and_different_prompts_different_ones(server: LoopbackLLM) -> None:
    first, again, other = (chat(server, text).choices[0].message.content
                           for text in ("hello there", "hello there", "hello there!"))
    assert first == again
    assert first != other
    assert server.request_count == 3


def test_the_api_key_is_recorded_redacted(server: LoopbackLLM) -> None:
    chat(server, "hi")
    HTTP.post(server.url + "/embeddings", json={"model": "m", "input": "x"}, headers={"api-key": "secret-2"})

    assert server.requests[0].headers["authorization"] == "<redacted>"
    assert server.requests[1].headers["api-key"] == "<redacted>"
    assert "sk-test" not in repr(server.requests) and "secret-2" not in repr(server.requests)


def test_max_tokens_cuts_the_reply_to_that_many_words(server: LoopbackLLM) -> None:
    resp = chat(server, "one two three four five six", max_tokens=3)
    assert resp.choices[0].message.content == "Summary: one two"
    assert resp.usage.completion_tokens == 3
    assert resp.choices[0].finish_reason == "length"


def test_a_reply_callable_answers_verbatim_and_its_failure_is_a_500() -> None:
    def reply(messages: list[dict]) -> str:
        if "boom" in messages[-1]["content"]:
            raise RuntimeError("boom")
        return "not json at all"

    with LoopbackLLM(reply=reply) as server:
        assert chat(server, "hi").choices[0].message.content == "not json at all"
        assert post(server, "/chat/completions", {"model": "m", "messages": [
            {"role": "user", "content": "boom"}]}).status_code == 500


def test_streaming_is_refused_with_a_clear_400(server: LoopbackLLM) -> None:
    resp = post(server, "/chat/completions", {"model": "m", "stream": True,
                                              "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "stream"
    assert "stream" in resp.json()["error"]["message"]


# ---------------------------------------------------------------- embeddings


def test_litellm_embedding_returns_unit_vectors_of_the_asked_length(server: LoopbackLLM) -> None:
    resp = litellm.embedding(model="openai/text-embedding-3-small", api_base=server.url,
                             api_key="sk-test", input=["a", "b"])
    vectors = [item["embedding"] for item in resp.data]
    assert vectors == [embedding_for("a", 16), embedding_for("b", 16)]
    assert math.isclose(sum(v * v for v in vectors[0]), 1.0, rel_tol=1e-5)
    assert litellm.completion_cost(completion_response=resp) > 0

    short = litellm.embedding(model="openai/text-embedding-3-small", api_base=server.url,
                              api_key="sk-test", input=["a"], dimensions=8)
    assert len(short.data[0]["embedding"]) == 8
    assert server.embedding_requests[1].body["dimensions"] == 8
    assert server.embedding_requests[0].inputs == ["a", "b"]


def test_the_openai_sdk_default_base64_encoding_decodes_to_the_same_vector(server: LoopbackLLM) -> None:
    client = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
    resp = client.embeddings.create(model="text-embedding-3-small", input="hello")

    assert server.embedding_requests[0].body["encoding_format"] == "base64"
    assert resp.data[0].embedding == embedding_for("hello", 16)
    assert resp.model == "text-embedding-3-small"


def test_raw_base64_is_little_endian_float32_and_token_ids_are_accepted(server: LoopbackLLM) -> None:
    resp = post(server, "/embeddings", {"model": "m", "input": "hi", "encoding_format": "base64"})
    raw = base64.b64decode(resp.json()["data"][0]["embedding"])
    assert list(struct.unpack("<16f", raw)) == embedding_for("hi", 16)

    tokens = post(server, "/embeddings", {"model": "m", "input": [[1, 2], [3]]}).json()
    assert [len(item["embedding"]) for item in tokens["data"]] == [16, 16]
    assert server.embedding_requests[1].inputs == ["[1, 2]", "[3]"]


# ---------------------------------------------------------------- JSON mode


class KuraSummary(BaseModel):
    summary: str
    request: str
    topic: str
    languages: list[str]
    task: str
    concerning_score: int = Field(ge=1, le=5)
    user_frustration: int = Field(ge=1, le=5)
    assistant_errors: Optional[list[str]] = None


class Severity(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Step(BaseModel):
    name: str
    done: bool
    weight: float = Field(gt=0, lt=1)


class Plan(BaseModel):
    title: str = Field(min_length=40, max_length=50)
    severity: Severity
    kind: Literal["bug", "question"]
    steps: list[Step] = Field(min_length=3, max_length=3)
    owner: Optional[Step]
    due: datetime
    pair: tuple[int, str]
    counts: dict[str, int]
    score: int = Field(gt=-3, lt=-1)


class Tree(BaseModel):
    label: str
    children: list[Tree]
    parent: Optional[Tree] = None


class Impossible(BaseModel):
    child: Impossible


class Cat(BaseModel):
    pet: Literal["cat"]
    lives: int = Field(ge=1, le=9)


class Dog(BaseModel):
    pet: Literal["dog"]
    good: bool


class Owner(BaseModel):
    animal: Annotated[Union[Cat, Dog], Field(discriminator="pet")]
    nickname: Optional[str] = Field(default=None, description="what the owner is called")


def json_schema_format(model: type[BaseModel]) -> dict:
    schema = {"name": model.__name__, "schema": model.model_json_schema()}
    return {"type": "json_schema", "json_schema": schema}


def test_json_schema_mode_through_litellm_validates_under_the_model(server: LoopbackLLM) -> None:
    resp = chat(server, "The refund took three weeks", response_format=json_schema_format(KuraSummary))
    summary = KuraSummary.model_validate_json(resp.choices[0].message.content)

    assert summary.summary == reply_for([{"role": "user", "content": "The refund took three weeks"}])
    assert 1 <= summary.concerning_score <= 5
    other = chat(server, "The app crashed", response_format=json_schema_format(KuraSummary))
    assert KuraSummary.model_validate_json(other.choices[0].message.content).summary != summary.summary


def test_a_pydantic_class_as_response_format_also_validates(server: LoopbackLLM) -> None:
    resp = chat(server, "Where is my order?", response_format=Plan)  # litellm builds a strict schema
    Plan.model_validate_json(resp.choices[0].message.content)


@pytest.mark.parametrize("model", [KuraSummary, Plan, Tree, Owner, Step])
@pytest.mark.parametrize("prompt", ["first prompt", "a second, different prompt"])
def test_generated_values_validate_for_many_schema_shapes(server: LoopbackLLM, model: type[BaseModel],
                                                         prompt: str) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}],
            "response_format": json_schema_format(model)}
    content = post(server, "/chat/completions", body).json()["choices"][0]["message"]["content"]
    model.model_validate_json(content)


def test_a_schema_without_a_finite_value_is_a_clear_500(server: LoopbackLLM) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}],
            "response_format": json_schema_format(Impossible)}
    resp = post(server, "/chat/completions", body)
    assert resp.status_code == 500 and "no finite value" in resp.json()["error"]["message"]


def test_json_object_mode_without_a_schema_gives_a_summary_object(server: LoopbackLLM) -> None:
    resp = chat(server, "hi", response_format={"type": "json_object"}, max_tokens=1)
    expected = {"summary": reply_for([{"role": "user", "content": "hi"}])}
    assert json.loads(resp.choices[0].message.content) == expected


# ---------------------------------------------------------------- faults as litellm sees them


def test_an_injected_429_is_a_rate_limit_error_carrying_retry_after(server: LoopbackLLM) -> None:
    server.fail_next(1, status=429, retry_after_s=0.05)
    with pytest.raises(litellm.RateLimitError) as caught:
        chat(server, "hi")

    headers = caught.value.litellm_response_headers  # exc.response.headers is empty in litellm
    assert headers["retry-after"] == "0.05" and headers["retry-after-ms"] == "50"
    assert chat(server, "hi").choices[0].message.content  # only the next one failed
    assert server.request_count == 2


def test_an_injected_500_is_an_internal_server_error(server: LoopbackLLM) -> None:
    server.fail_next(1, status=500)
    with pytest.raises(litellm.InternalServerError) as caught:
        chat(server, "hi")
    assert caught.value.status_code == 500
    assert "retry-after" not in caught.value.litellm_response_headers


def test_the_refuse_marker_is_a_content_policy_violation(server: LoopbackLLM) -> None:
    """OpenAI's body, as OpenAI sends it (litellm 1.110 no longer maps it to its
    ContentPolicyViolationError; kura_magic reads the code: tests/test_provider_errors.py)."""
    with pytest.raises(litellm.BadRequestError) as raised:
        chat(server, "please [[refuse]] this")
    assert (raised.value.status_code, raised.value.code) == (400, "content_policy_violation")
    assert server.request_count == 1


def test_the_too_long_marker_is_a_context_window_error(server: LoopbackLLM) -> None:
    with pytest.raises(litellm.ContextWindowExceededError):
        chat(server, "a very [[too-long]] prompt")


def test_a_hanging_request_times_out_the_client(server: LoopbackLLM) -> None:
    server.hang_next(1, seconds=30)
    with pytest.raises(litellm.Timeout):
        chat(server, "hi", timeout=0.5)
    assert server.request_count == 1


def test_stop_wakes_a_hanging_request_at_once() -> None:
    server = LoopbackLLM().start()
    server.hang_next(1, seconds=30)

    def call() -> None:
        try:  # answered or cut off, the call must end once the server stops
            httpx.get(server.url + "/models", timeout=60)
        except httpx.HTTPError:
            pass

    caller = threading.Thread(target=call)
    caller.start()
    wait_until(lambda: server.request_count == 1)
    server.stop()
    caller.join(timeout=10)
    assert not caller.is_alive()


def test_fail_rate_is_seeded_and_deterministic(server: LoopbackLLM) -> None:
    def statuses() -> list[int]:
        return [HTTP.get(server.url + "/models").status_code for _ in range(20)]

    server.fail_rate(0.5, status=503, seed=7)
    first = statuses()
    server.fail_rate(0.5, status=503, seed=7)
    assert statuses() == first
    assert set(first) == {200, 503}
    server.fail_rate(1.0)
    failed = HTTP.get(server.url + "/models")
    assert failed.status_code == 429 and failed.headers["retry-after"] == "0"
    assert failed.json()["error"]["code"] == "rate_limit_exceeded"
    server.reset()
    assert statuses() == [200] * 20 and server.request_count == 20


# ---------------------------------------------------------------- concurrency and bookkeeping


def test_peak_in_flight_counts_concurrent_requests() -> None:
    with LoopbackLLM(latency_s=0.2) as server:
        barrier = threading.Barrier(5)

        def call() -> None:
            barrier.wait()
            post(server, "/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]})

        threads = [threading.Thread(target=call) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert server.peak_in_flight == 5 and server.request_count == 5

        server.reset()
        for _ in range(2):
            chat(server, "one at a time")
        assert server.peak_in_flight == 1 and server.request_count == 2


def test_concurrent_async_litellm_calls_are_in_flight_together() -> None:
    # The reply waits until all five requests are inside the server: no timing involved.
    together = threading.Barrier(5, timeout=10)

    def reply(messages: list[dict]) -> str:
        together.wait()
        return reply_for(messages)

    async def run(server: LoopbackLLM) -> list[str]:
        calls = [litellm.acompletion(model="openai/gpt-4o-mini", api_base=server.url, api_key="sk-test",
                                     messages=[{"role": "user", "content": f"prompt {i}"}])
                 for i in range(5)]
        return [resp.choices[0].message.content for resp in await asyncio.gather(*calls)]

    with LoopbackLLM(reply=reply) as server:
        assert len(set(asyncio.run(run(server)))) == 5
        assert server.peak_in_flight == 5


def test_a_chunked_body_is_read(server: LoopbackLLM) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "in pieces"}]}).encode()
    resp = HTTP.post(server.url + "/chat/completions", content=iter([body[:10], body[10:]]))
    assert resp.status_code == 200 and "in pieces" in resp.json()["choices"][0]["message"]["content"]
    assert server.requests[0].headers["transfer-encoding"] == "chunked"
    assert HTTP.get(server.url + "/models").status_code == 200  # the connection is still in step


def test_reset_lets_go_of_a_request_left_hanging_by_a_timed_out_client(server: LoopbackLLM) -> None:
    server.hang_next(1, seconds=30)
    with pytest.raises(httpx.TimeoutException):
        HTTP.get(server.url + "/models", timeout=0.3)
    server.reset()

    assert HTTP.get(server.url + "/models").status_code == 200
    assert server.peak_in_flight == 1 and server.request_count == 1


def test_a_request_still_arriving_at_reset_does_not_take_the_next_tests_fault(server: LoopbackLLM) -> None:
    # A run that failed fast can leave a call on the wire; it must not eat the next fault.
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "late"}]}).encode()
    late = socket.create_connection(("127.0.0.1", server.port))
    late.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:5])
    wait_until(lambda: server._handling == 1)
    threading.Timer(0.2, lambda: late.sendall(body[5:])).start()

    server.reset()
    server.fail_next(1, status=401)

    assert late.recv(4096).split(b"\r\n")[0] == b"HTTP/1.1 200 OK", "the late call was answered"
    late.close()
    assert HTTP.get(server.url + "/models").status_code == 401
    assert server.request_count == 1


def test_unknown_paths_and_bad_json_get_openai_errors_and_are_counted(server: LoopbackLLM) -> None:
    missing = HTTP.post(server.url + "/completions", json={})
    broken = HTTP.post(server.url + "/chat/completions", content=b"{not json")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]["message"]
    assert server.request_count == 2 and server.requests[1].body == {}


def test_paths_work_without_the_v1_prefix_and_models_lists_loopback(server: LoopbackLLM) -> None:
    root = server.url.removesuffix("/v1")
    assert HTTP.get(root + "/models").json()["data"][0]["id"] == "loopback"
    resp = HTTP.post(root + "/chat/completions",
                     json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert resp.json()["object"] == "chat.completion"
    assert [r.path for r in server.requests] == ["/models", "/chat/completions"]
    assert isinstance(server.requests[0], RecordedRequest) and server.requests[0].method == "GET"


# ---------------------------------------------------------------- the command line and imports


def test_the_module_serves_from_the_command_line_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "kura_magic.testing", "--port-file", str(port_file)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: port_file.exists() or proc.poll() is not None)
        port = int(port_file.read_text())
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                          json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        expected = reply_for([{"role": "user", "content": "hi"}])
        assert resp.json()["choices"][0]["message"]["content"] == expected
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.splitlines() == [f"kura_magic loopback LLM on http://127.0.0.1:{port}/v1"]
    assert "POST /v1/chat/completions" not in err  # no per-request log lines


def test_the_module_alone_imports_no_litellm_ipython_or_widgets() -> None:
    code = ("import sys, kura_magic.testing\n"
            "heavy = {'litellm', 'IPython', 'ipywidgets'}\n"
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("flags", "statuses", "retry_after"), [
    (["--fail-first", "2", "--fail-status", "503"], [503, 503, 200], None),
    (["--fail-rate", "1", "--retry-after", "2"], [429, 429, 429], "2"),
], ids=["fail-first", "fail-rate"])
def test_the_command_line_server_injects_the_faults_it_is_given(tmp_path, flags, statuses, retry_after) -> None:
    port_file = tmp_path / "port"
    process = subprocess.Popen([sys.executable, "-m", "kura_magic.testing", "--port-file", str(port_file), *flags],
                               stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text().strip()}/v1/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        replies = [HTTP.post(url, json=body) for _ in statuses]
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert [reply.status_code for reply in replies] == statuses
    assert replies[0].headers.get("retry-after") == retry_after
