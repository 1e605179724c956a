"""The loopback server's Files and Batch APIs, driven by litellm's own batch functions over
HTTP, as a provider's would be: upload, create, poll through validating and in progress to
completed, download the output and error files; cancel; expire."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from kura_magic.calls.gateway import litellm
from kura_magic.testing import LoopbackLLM

MODEL = "gpt-4o-mini"


def line(custom_id: str, text: str) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": text}]}}


def batch_of(server: LoopbackLLM, lines: list[dict[str, Any]]) -> Any:
    """Upload `lines` and create a batch of them, with litellm; the batch object."""
    async def submit() -> Any:
        where = {"custom_llm_provider": "openai", "api_base": server.url, "api_key": "sk-test"}
        data = "".join(json.dumps(row) + "\n" for row in lines).encode()
        uploaded = await litellm().acreate_file(file=("requests.jsonl", data), purpose="batch", **where)
        return await litellm().acreate_batch(completion_window="24h", endpoint="/v1/chat/completions",
                                             input_file_id=uploaded.id, **where)
    return asyncio.run(submit())


def retrieve(server: LoopbackLLM, batch_id: str) -> Any:
    where = {"custom_llm_provider": "openai", "api_base": server.url, "api_key": "sk-test"}
    return asyncio.run(litellm().aretrieve_batch(batch_id=batch_id, **where))


def rows(server: LoopbackLLM, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    where = {"custom_llm_provider": "openai", "api_base": server.url, "api_key": "sk-test"}
    content = asyncio.run(litellm().afile_content(file_id=file_id, **where)).content
    return [json.loads(row) for row in content.splitlines()]


@pytest.fixture
def server():
    with LoopbackLLM() as llm:
        yield llm


def test_a_batch_goes_from_validating_to_completed_and_its_lines_are_answered(server):
    server.batches.delay_s = 1.0
    batch = batch_of(server, [line("k1", "where is my parcel"), line("k2", "please [[refuse]] this")])
    assert batch.status == "validating" and batch.request_counts.total == 2

    time.sleep(0.3)
    assert retrieve(server, batch.id).status == "in_progress"
    time.sleep(0.9)
    done = retrieve(server, batch.id)

    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 1)
    [answered] = rows(server, done.output_file_id)
    [refused] = rows(server, done.error_file_id)
    assert answered["custom_id"] == "k1" and answered["response"]["status_code"] == 200
    assert answered["response"]["body"]["choices"][0]["message"]["content"].startswith("Summary: where is my parcel")
    assert answered["response"]["body"]["usage"]["completion_tokens"] > 0
    assert refused["custom_id"] == "k2" and refused["response"]["status_code"] == 400
    assert refused["response"]["body"]["error"]["code"] == "content_policy_violation"
    assert server.chat_requests == [], "a batch's lines are not chat calls"


def test_an_expired_batch_fails_its_unfinished_lines(server):
    server.batches.delay_s = 60
    batch = batch_of(server, [line(f"k{i}", f"question {i}") for i in range(3)])

    server.batches.expire(batch.id, finished=1)
    ended = retrieve(server, batch.id)

    assert ended.status == "expired" and (ended.request_counts.completed, ended.request_counts.failed) == (1, 2)
    assert [row["custom_id"] for row in rows(server, ended.output_file_id)] == ["k0"]
    assert [row["error"]["code"] for row in rows(server, ended.error_file_id)] == ["batch_expired"] * 2


def test_a_cancelled_batch_stops_where_it_was(server):
    server.batches.delay_s = 60
    batch = batch_of(server, [line(f"k{i}", f"question {i}") for i in range(3)])
    where = {"custom_llm_provider": "openai", "api_base": server.url, "api_key": "sk-test"}

    cancelled = asyncio.run(litellm().acancel_batch(batch_id=batch.id, **where))

    assert cancelled.status == "cancelled" and cancelled.output_file_id is None
    assert retrieve(server, batch.id).status == "cancelled"


def test_an_unknown_batch_or_file_is_a_404(server):
    with pytest.raises(Exception) as raised:
        retrieve(server, "batch_nope")
    assert getattr(raised.value, "status_code", None) == 404
