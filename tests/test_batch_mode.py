"""Batch mode against the loopback server's Files and Batch APIs, over HTTP through litellm:
a run's misses go out as one provider batch, its state lives in the store (disk, Redis,
S3), and any run, process or `km.batches()` collects it into the per-call cache. Every
test asserts what the server received."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from pydantic import BaseModel
from helpers import EMBEDDING_MODEL, MODEL, PROMPT, make_conversations, race_two_processes

import kura_magic as km
from kura_magic.calls import batch_calls
from kura_magic.errors import BatchError, BatchPendingError
from kura_magic.run.batch_mode import poll_batches
from kura_magic.storage.batches import BatchBook, BatchRecord
from kura_magic.views.batches import BatchTable


@pytest.fixture(autouse=True)
def batches_end_at_once(llm) -> Iterator[None]:
    """Batches complete when first polled, before and after each test (the session's server
    keeps its delay across resets)."""
    llm.batches.delay_s = 0.0
    yield
    llm.batches.delay_s = 0.0


@pytest.fixture(params=["disk", "redis"])
def disk_or_redis(request) -> str:
    """The store of a test that starts processes: disk (two kernels), Redis (two machines)."""
    if request.param == "redis":
        request.getfixturevalue("redis_cache")
    return request.param


def run_python(code: str) -> str:
    """Run `code` in a new Python process with this one's environment; its last line."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def lines_sent(llm) -> int:
    """Request lines in every batch the server was sent."""
    return sum(len(llm.batches._batches[batch_id].lines) for batch_id in llm.batches.batch_ids)


def statuses(run) -> list[str]:
    return [result.status for result in run]


def test_a_batch_run_then_a_normal_run_sends_no_chat_call(llm, backend):
    conversations = make_conversations(6)

    batched = km.summarise(conversations, PROMPT, batch=True)
    again = km.summarise(conversations, PROMPT)

    assert len(llm.batches.batch_ids) == 1 and lines_sent(llm) == 6
    assert statuses(batched) == ["ok"] * 6 and batched.stats.fresh == 6
    assert batched[0].summary.startswith("Summary: Summarise this support chat")
    assert again.stats.cached == 6 and [r.summary for r in again] == [r.summary for r in batched]
    assert llm.chat_requests == [], "every answer came from the batch, then from the cache"


def test_only_the_misses_go_into_the_batch(llm):
    conversations = make_conversations(5)
    km.summarise(conversations[:2], PROMPT)

    run = km.summarise(conversations, PROMPT, batch=True)

    assert len(llm.chat_requests) == 2 and lines_sent(llm) == 3
    assert (run.stats.cached, run.stats.fresh) == (2, 3)


def test_pending_rows_are_pending_not_errors_and_running_again_collects_them(llm, backend):
    llm.batches.delay_s = 60
    conversations = make_conversations(4)

    first = km.summarise(conversations, PROMPT, batch=True)
    meanwhile = km.summarise(conversations, PROMPT, batch=True)
    llm.batches.delay_s = 0  # the provider finishes it
    collected = km.summarise(conversations, PROMPT, batch=True)

    assert statuses(first) == ["pending"] * 4 and first.stats.errors == 0
    assert "pending in batch" in first[0].error
    assert statuses(meanwhile) == ["pending"] * 4
    assert statuses(collected) == ["ok"] * 4
    assert len(llm.batches.batch_ids) == 1, "running again attaches to the pending batch"
    assert llm.chat_requests == []


def test_a_run_of_some_of_a_batch_s_rows_collects_it_and_shows_only_its_own(llm):
    conversations = make_conversations(4)
    llm.batches.delay_s = 60
    km.summarise(conversations, PROMPT, batch=True)
    llm.batches.delay_s = 0

    one = km.summarise(conversations[1:2], PROMPT)

    assert statuses(one) == ["ok"] and one.stats.fresh == 1 and one.stats.total == 1
    assert km.summarise(conversations, PROMPT).stats.cached == 4, "the whole batch was collected"
    assert llm.chat_requests == []


def test_a_normal_run_meeting_a_pending_batch_shows_its_rows_pending_and_pays_nothing(llm):
    llm.batches.delay_s = 60
    conversations = make_conversations(3)
    km.summarise(conversations, PROMPT, batch=True)

    normal = km.summarise(conversations + make_conversations(1, prefix="new", text="another"), PROMPT)

    assert statuses(normal) == ["pending"] * 3 + ["ok"]
    assert len(llm.chat_requests) == 1, "only the row no batch carries is called"


def test_a_new_process_resumes_a_pending_batch_without_submitting_again(llm, disk_or_redis):
    llm.batches.delay_s = 60
    conversations = make_conversations(5)
    submitted = run_python(f"""
        import json, os, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import kura_magic as km
        from helpers import PROMPT, make_conversations
        run = km.summarise(make_conversations(5), PROMPT, batch=True)
        print(json.dumps([r.status for r in run]))
        os._exit(0)  # the kernel dies with its batch pending
    """)
    llm.batches.delay_s = 0  # the provider finishes it while no kernel is there

    resumed = km.summarise(conversations, PROMPT, batch=True)

    assert json.loads(submitted) == ["pending"] * 5
    assert statuses(resumed) == ["ok"] * 5 and resumed.stats.fresh == 5
    assert len(llm.batches.batch_ids) == 1 and llm.chat_requests == []
    assert km.summarise(conversations, PROMPT).stats.cached == 5


def test_two_processes_needing_the_same_misses_create_one_batch(llm, tmp_path, disk_or_redis):
    llm.batches.delay_s = 60

    results = race_two_processes(tmp_path, count=20, mine="rows", options=", batch=True")

    assert len(llm.batches.batch_ids) == 1 and lines_sent(llm) == 20
    assert results == [[0, 0, 0], [0, 0, 0]], "both see their rows pending in the one batch"
    assert llm.chat_requests == []


def test_a_batch_with_failed_lines_caches_the_deterministic_failures(llm):
    conversations = make_conversations(4)
    conversations[1]["messages"][0]["content"] = "please [[refuse]] this"
    conversations[2]["messages"][0]["content"] = "an answer the [[filtered]] filter stops"

    batched = km.summarise(conversations, PROMPT, batch=True)
    again = km.summarise(conversations, PROMPT)

    assert statuses(batched) == ["ok", "error", "error", "ok"]
    assert batched[1].error.startswith("content_policy") and batched[2].error.startswith("content_policy")
    assert batched.stats.errors_retryable == 0
    assert again.stats.cached == 4 and again.stats.errors_cached == 2
    assert llm.chat_requests == [], "a refusal is cached as a normal call's would be"


def test_an_expired_batch_lets_its_unfinished_keys_go_and_they_are_made_again(llm, disk_or_redis):
    llm.batches.delay_s = 60
    conversations = make_conversations(5)
    km.summarise(conversations, PROMPT, batch=True)
    [batch_id] = llm.batches.batch_ids

    llm.batches.expire(batch_id, finished=2)
    after = km.summarise(conversations, PROMPT, batch=True)
    llm.batches.delay_s = 0
    rest = km.summarise(conversations, PROMPT, batch=True)

    assert statuses(after)[:2] == ["ok", "ok"]
    assert statuses(after)[2:] == ["pending"] * 3, "the lines it never ran went into a new batch"
    assert len(llm.batches.batch_ids) == 2 and len(llm.batches._batches[llm.batches.batch_ids[1]].lines) == 3
    assert statuses(rest) == ["ok"] * 5 and rest.stats.cached == 2
    assert llm.chat_requests == []


def test_an_expired_batch_s_leftovers_can_be_made_by_a_normal_run(llm):
    llm.batches.delay_s = 60
    conversations = make_conversations(4)
    km.summarise(conversations, PROMPT, batch=True)
    llm.batches.expire(llm.batches.batch_ids[0], finished=1)

    normal = km.summarise(conversations, PROMPT)

    assert statuses(normal) == ["ok"] * 4
    assert len(llm.chat_requests) == 3, "the three lines the batch never ran, and only those"


def test_a_cancelled_batch_is_collected_and_its_keys_let_go(llm, backend):
    llm.batches.delay_s = 60
    conversations = make_conversations(3)
    km.summarise(conversations, PROMPT, batch=True)
    [batch_id] = llm.batches.batch_ids

    listed = poll_batches(cancel=batch_id)
    normal = km.summarise(conversations, PROMPT)

    assert [(r.batch_id, r.state, r.collected) for r in listed] == [(batch_id, "cancelled", True)]
    assert statuses(normal) == ["ok"] * 3 and len(llm.chat_requests) == 3


def test_batch_lines_are_priced_at_the_batch_price(llm):
    conversations = make_conversations(5)

    normal = km.summarise(conversations, PROMPT, experiment="normal")
    batched = km.summarise(conversations, PROMPT, experiment="batched", batch=True)
    [record] = BatchBook.of(km.config.settings()).records(experiment="batched")

    # gpt-4o-mini's *_batches prices in litellm's map are half its normal ones
    assert batched.stats.cost == pytest.approx(normal.stats.cost / 2) and batched.stats.cost > 0
    assert record.cost == pytest.approx(batched.stats.cost)
    assert record.estimated_cost is not None and record.estimated_cost > record.cost, \
        "estimated with the 200-token reply guess, longer than the loopback's replies"
    assert km.summarise(conversations, PROMPT, experiment="batched").stats.saved_cost == pytest.approx(record.cost)


def test_a_provider_without_a_batch_api_is_one_error_before_anything_is_sent(llm, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-loopback")

    with pytest.raises(BatchError, match="no batch API for 'anthropic/claude-3-5-haiku-20241022'"):
        km.summarise(make_conversations(2), PROMPT, model="anthropic/claude-3-5-haiku-20241022", batch=True)

    assert llm.request_count == 0


def test_batch_mode_without_a_writable_cache_is_one_error_before_anything_is_sent(llm):
    with pytest.raises(BatchError, match="cache_mode 'read_write'"):
        km.summarise(make_conversations(2), PROMPT, cache_mode="read_only", batch=True)

    assert llm.request_count == 0


def test_the_batch_is_in_the_store_as_soon_as_it_is_submitted(llm, backend):
    llm.batches.delay_s = 60
    run = km.summarise(make_conversations(3), PROMPT, batch=True)

    [record] = BatchBook.of(km.config.settings()).records()

    assert record.batch_id == llm.batches.batch_ids[0] and record.model == MODEL
    assert record.keys == [r.key for r in run] and record.pending
    assert record.state in ("validating", "in_progress")


def test_the_magic_sends_a_batch_and_kura_batches_shows_and_collects_it(shell, llm):
    llm.batches.delay_s = 60
    shell.user_ns["convs"] = make_conversations(4)
    shell.run_line_magic("config", "KuraMagics.panel = 'text'")

    sent = shell.run_cell_magic("summarise", "convs --out nightly --batch", PROMPT)
    shown = repr(shell.run_line_magic("kura", "batches"))
    llm.batches.delay_s = 0
    done = shell.run_line_magic("kura", "batches")
    again = shell.run_cell_magic("summarise", "convs --out nightly", PROMPT)

    assert statuses(sent) == ["pending"] * 4 and shell.user_ns["nightly"] is again
    assert "1 batch, 1 pending" in shown and "validating 0/4" in shown
    assert "about $" in shown, "what it will cost, before it is done"
    assert "completed" in repr(done) and "1 batch, 0 pending" in repr(done)
    assert "<table>" in done._repr_html_()
    assert again.stats.cached == 4 and llm.chat_requests == [] and len(llm.batches.batch_ids) == 1
    history = km.runs()
    assert list(history["label"]) == ["nightly"] and list(history["repeats"]) == [1], \
        "the history records the batch run, and the cached run of the same calls as its repeat"
    assert [r.status for r in km.load_run(-1)] == ["ok"] * 4, "loaded from the cache the batch filled"


def test_kura_batches_cancel_cancels_the_batch(shell, llm):
    llm.batches.delay_s = 60
    shell.user_ns["convs"] = make_conversations(2)
    shell.run_line_magic("config", "KuraMagics.panel = 'text'")
    shell.run_cell_magic("summarise", "convs --batch", PROMPT)

    cancelled = shell.run_line_magic("kura", f"batches cancel {llm.batches.batch_ids[0]}")

    assert "cancelled" in repr(cancelled) and "0 pending" in repr(cancelled)


def test_embed_in_a_batch_then_a_normal_embed_sends_no_embedding_request(llm, backend):
    texts = ["refund please", "where is my parcel", "refund please"]
    llm.batches.delay_s = 60

    with pytest.raises(BatchPendingError, match="2 of 2 texts are in a provider batch"):
        km.embed(texts, model=EMBEDDING_MODEL, batch=True)
    llm.batches.delay_s = 0
    collected = km.embed(texts, model=EMBEDDING_MODEL, batch=True)
    again = km.embed(texts, model=EMBEDDING_MODEL)

    assert len(llm.batches.batch_ids) == 1 and lines_sent(llm) == 2
    assert [e.cached for e in collected] == [False, False, True] and collected.total_cost > 0
    assert again.cached_count == 3 and (again.to_numpy() == collected.to_numpy()).all()
    assert llm.embedding_requests == []


def test_the_batch_view_escapes_what_it_shows():
    record = BatchRecord(batch_id="batch_<script>", provider="openai", model="openai/<b>m</b>", experiment="x",
                         keys=["k"], token="t", state="in_progress", completed=1)

    shown = BatchTable([record])._repr_html_()

    assert "<script>" not in shown and "&lt;script&gt;" in shown and "&lt;b&gt;m&lt;/b&gt;" in shown
    assert "in progress 1/1" in shown


def test_misses_past_the_provider_s_line_limit_go_in_several_batches(llm, monkeypatch):
    monkeypatch.setattr(batch_calls, "MAX_LINES", 2)
    conversations = make_conversations(5)

    run = km.summarise(conversations, PROMPT, batch=True)

    assert [len(llm.batches._batches[b].lines) for b in llm.batches.batch_ids] == [2, 2, 1]
    assert statuses(run) == ["ok"] * 5 and km.summarise(conversations, PROMPT).stats.cached == 5
    assert llm.chat_requests == []


def test_a_structured_batch_sends_the_schema_and_parses_its_replies(llm):
    class Ticket(BaseModel):
        summary: str
        urgent: bool

    conversations = make_conversations(3)

    batched = km.summarise(conversations, PROMPT, schema=Ticket, batch=True)
    again = km.summarise(conversations, PROMPT, schema=Ticket)

    [batch_id] = llm.batches.batch_ids
    sent = llm.batches._batches[batch_id].lines[0]["body"]
    assert sent["response_format"]["json_schema"]["name"] == "Ticket" and sent["model"] == "gpt-4o-mini"
    assert all(isinstance(r.summary, Ticket) for r in batched)
    assert again.stats.cached == 3 and llm.chat_requests == []


@pytest.mark.parametrize(("status", "kind"), [(500, "transient"), (429, "transient"), (400, "other")])
def test_a_failed_line_is_sorted_as_a_failed_call_would_be(status, kind):
    line = {"custom_id": "k", "response": {"status_code": status, "body": {"error": {"message": "no"}}}}

    assert batch_calls.line_failure(line).kind == kind


def test_a_batch_the_provider_refuses_is_one_error_and_its_calls_are_let_go(llm, backend):
    conversations = make_conversations(3)
    llm.fail_next(1, status=400)  # the upload

    with pytest.raises(BatchError, match="the provider did not take the batch .*3 calls were not sent"):
        km.summarise(conversations, PROMPT, batch=True)
    normal = km.summarise(conversations, PROMPT)

    assert llm.batches.batch_ids == [] and BatchBook.of(km.config.settings()).records() == []
    assert statuses(normal) == ["ok"] * 3 and len(llm.chat_requests) == 3, "no lease left held"
