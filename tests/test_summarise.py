"""summarise() against the loopback server: what is fresh, what is cached, what it cost."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel, Field

import kura_magic as km
from helpers import PROMPT, UNPRICED_MODEL, make_conversations, schema_with_a_bug

pytestmark = pytest.mark.usefixtures("backend")  # each test runs on disk and on Redis


def test_second_run_is_served_from_cache_and_saves_what_the_first_spent(llm):
    conversations = make_conversations(50)

    first = km.summarise(conversations, PROMPT)
    assert llm.request_count == 50
    assert (first.stats.fresh, first.stats.cached, first.stats.errors) == (50, 0, 0)
    assert first.stats.cost > 0

    second = km.summarise(conversations, PROMPT)
    assert llm.request_count == 50, "a cached re-run must send nothing"
    assert (second.stats.fresh, second.stats.cached) == (0, 50)
    assert second.stats.cost == 0
    assert second.stats.saved_cost == pytest.approx(first.stats.cost)
    assert [r.summary for r in second] == [r.summary for r in first]
    assert [r.conversation_id for r in second] == [f"c{i}" for i in range(50)]


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": PROMPT.replace("one line", "two lines")},
        {"temperature": 0.7},
        {"max_tokens": 40},
        {"model": "openai/gpt-4o"},
    ],
    ids=["prompt", "temperature", "max_tokens", "model"],
)
def test_anything_that_changes_the_answer_is_a_miss(llm, change):
    conversations = make_conversations(5)
    km.summarise(conversations, PROMPT)
    llm.reset()

    options = {"prompt": PROMPT, **change}
    run = km.summarise(conversations, options.pop("prompt"), **options)

    assert llm.request_count == 5
    assert run.stats.fresh == 5


def _schema_v1() -> type[BaseModel]:
    class Verdict(BaseModel):
        summary: str

    return Verdict


def _schema_v2() -> type[BaseModel]:
    class Verdict(BaseModel):  # same class name, one more field
        summary: str
        urgency: int = Field(ge=1, le=3)

    return Verdict


def test_a_schema_field_change_under_the_same_class_name_is_a_miss(llm):
    conversations = make_conversations(4)
    first = km.summarise(conversations, PROMPT, schema=_schema_v1())
    assert llm.request_count == 4
    assert all(r.summary.summary for r in first)

    second = km.summarise(conversations, PROMPT, schema=_schema_v2())
    assert llm.request_count == 8
    assert all(1 <= r.summary.urgency <= 3 for r in second)


def test_new_ids_and_metadata_hit_the_cache_and_come_back_as_given(llm):
    km.summarise(make_conversations(6), PROMPT)
    renamed = make_conversations(6, prefix="renamed-")
    for row in renamed:
        row["metadata"] = {"team": "billing"}

    run = km.summarise(renamed, PROMPT)

    assert llm.request_count == 6
    assert run.stats.cached == 6
    assert [r.conversation_id for r in run] == [f"renamed-{i}" for i in range(6)]
    assert all(r.metadata == {"team": "billing"} for r in run)


def test_identical_conversations_share_one_request(llm):
    twins = make_conversations(1) + make_conversations(1, prefix="twin-")

    run = km.summarise(twins, PROMPT)

    assert llm.request_count == 1
    assert [r.conversation_id for r in run] == ["c0", "twin-0"]
    assert run[0].summary == run[1].summary
    assert (run.stats.fresh, run.stats.cached) == (1, 1)


def test_experiments_are_isolated_and_cleared_one_at_a_time(llm):
    conversations = make_conversations(3)
    km.summarise(conversations, PROMPT, experiment="A")
    km.summarise(conversations, PROMPT, experiment="B")
    assert llm.request_count == 6, "the same calls in another experiment are misses"

    km.clear_cache("A")
    info = km.cache_info()
    assert info.for_experiment("A").entries == 0
    assert info.for_experiment("B").entries == 3

    km.summarise(conversations, PROMPT, experiment="B")
    assert llm.request_count == 6
    km.summarise(conversations, PROMPT, experiment="A")
    assert llm.request_count == 9


def test_active_experiment_scopes_runs(llm):
    conversations = make_conversations(2)
    with km.experiment("scoped"):
        km.summarise(conversations, PROMPT)
    assert km.cache_info().for_experiment("scoped").entries == 2
    assert km.cache_info().for_experiment("default").entries == 0


def test_experiment_switches_only_inside_with_and_set_experiment_for_good(llm):
    km.experiment("never-entered")
    assert km.active_experiment() == "default", "calling experiment() alone must not switch"

    with pytest.raises(RuntimeError), km.experiment("left-by-an-error"):
        raise RuntimeError("boom")
    assert km.active_experiment() == "default"

    km.set_experiment("kept")
    km.summarise(make_conversations(1), PROMPT)
    assert km.cache_info().for_experiment("kept").entries == 1


def test_complete_and_summarise_share_one_key_for_the_same_prompt(llm):
    conversation = make_conversations(1)[0]
    prompt = "Say what the user wants:\n{{ transcript }}"
    run = km.summarise([conversation], prompt)
    rendered = "Say what the user wants:\n" + km.load_conversations([conversation])[0].transcript()

    reply = km.complete(rendered)

    assert reply.key == run[0].key
    assert reply.cached and reply.text == run[0].summary
    assert llm.request_count == 1


def test_a_bug_in_the_progress_callback_escapes_too(llm):
    reports = []

    def on_progress(stats: km.RunStats) -> None:
        reports.append(stats.done)
        if stats.done == 2:
            raise ZeroDivisionError("a bug in a progress view")

    with pytest.raises(ZeroDivisionError, match="a bug in a progress view"):
        km.summarise(make_conversations(5), PROMPT, max_concurrency=1, on_progress=on_progress)

    # (before the rows: the cache read, maybe the provider library loading, the calls' start)
    assert reports[-3:] == [0, 1, 2], "nothing was reported after the failure"
    assert llm.request_count == 2


def test_an_unexpected_exception_in_one_row_escapes_and_keeps_what_finished(llm):
    buggy = schema_with_a_bug(fails_on=3)
    conversations = make_conversations(6)

    with pytest.raises(KeyError, match="a bug in a validator"):
        km.summarise(conversations, PROMPT, schema=buggy, max_concurrency=1)

    assert llm.request_count == 3, "the calls after the failing one were cancelled"
    again = km.summarise(conversations[:2], PROMPT, schema=buggy)
    assert again.stats.cached == 2, "the rows that finished before the bug are in the cache"
    assert llm.request_count == 3


def test_peak_in_flight_stays_within_the_configured_limit(llm, monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_MAX_CONCURRENCY", "4")
    llm.latency_s = 0.05

    km.summarise(make_conversations(24), PROMPT)

    assert llm.request_count == 24
    assert 2 <= llm.peak_in_flight <= 4


def test_per_run_concurrency_override(llm):
    llm.latency_s = 0.05
    km.summarise(make_conversations(10), PROMPT, max_concurrency=2)
    assert llm.peak_in_flight <= 2


def test_transient_failures_are_retried_and_never_cached(llm):
    llm.fail_rate(0.2, status=429, retry_after_s=0.01, seed=7)

    run = km.summarise(make_conversations(30), PROMPT)

    assert run.stats.errors == 0 and run.stats.fresh == 30
    assert llm.request_count > 30, "some requests were refused and retried"
    llm.fail_rate(0.0)
    llm.reset()
    assert km.summarise(make_conversations(30), PROMPT).stats.cached == 30
    assert llm.request_count == 0


def test_server_errors_are_retried(llm):
    llm.fail_rate(0.2, status=500, seed=3)
    run = km.summarise(make_conversations(20), PROMPT)
    assert run.stats.errors == 0
    assert llm.request_count > 20


def test_content_policy_refusal_is_cached_as_an_error(llm):
    conversations = make_conversations(3)
    conversations[1]["messages"][0]["content"] += " [[refuse]]"

    first = km.summarise(conversations, PROMPT)
    assert first.stats.errors == 1
    assert first[1].status == "error" and "content_policy" in first[1].error
    assert llm.request_count == 3

    second = km.summarise(conversations, PROMPT)
    assert llm.request_count == 3, "a refusal is deterministic: not asked again"
    assert second[1].error == first[1].error and second[1].cached


def test_refresh_calls_again_and_no_cache_never_reads_or_writes(llm):
    conversations = make_conversations(3)
    km.summarise(conversations, PROMPT)

    assert km.summarise(conversations, PROMPT, cache_mode="refresh").stats.fresh == 3
    assert llm.request_count == 6
    assert km.summarise(conversations, PROMPT, cache_mode="off").stats.fresh == 3
    assert llm.request_count == 9
    assert km.cache_info().for_experiment("default").entries == 3


def test_read_only_reads_but_never_writes(llm):
    conversations = make_conversations(3)
    km.summarise(conversations[:1], PROMPT)

    run = km.summarise(conversations, PROMPT, cache_mode="read_only")

    assert (run.stats.cached, run.stats.fresh) == (1, 2)
    assert km.cache_info().for_experiment("default").entries == 1


def test_summarise_works_inside_a_running_event_loop(llm):
    async def notebook_cell():
        return km.summarise(make_conversations(3), PROMPT)

    run = asyncio.run(notebook_cell())
    assert run.stats.fresh == 3 and llm.request_count == 3


def test_asummarise_can_be_awaited(llm):
    run = asyncio.run(km.asummarise(make_conversations(3), PROMPT))
    assert run.stats.fresh == 3


def test_unknown_price_is_none_and_totals_say_at_least(llm):
    run = km.summarise(make_conversations(2), PROMPT, model=UNPRICED_MODEL)
    assert all(r.cost is None for r in run)
    assert run.stats.cost_unknown == 2
    assert run.stats.spent_text.startswith("≥")
    assert f"no price known for {UNPRICED_MODEL} — is the name right?" in repr(run)


def test_offline_mode_raises_with_the_number_of_missing_calls(llm, monkeypatch):
    conversations = make_conversations(4)
    km.summarise(conversations[:1], PROMPT)
    monkeypatch.setenv("KURA_MAGIC_OFFLINE", "1")

    with pytest.raises(km.errors.CacheMissError, match="3 of 4 calls"):
        km.summarise(conversations, PROMPT)
    assert llm.request_count == 1
    assert km.summarise(conversations[:1], PROMPT).stats.cached == 1


def test_estimate_calls_nothing_and_prices_the_fresh_calls(llm):
    conversations = make_conversations(5)
    km.summarise(conversations[:2], PROMPT)
    llm.reset()

    plan = km.estimate(conversations, PROMPT)

    assert llm.request_count == 0
    assert (plan.cached, plan.fresh) == (2, 3)
    assert plan.estimated_cost is not None and plan.estimated_cost > 0
    assert "mathjax_ignore" in plan._repr_html_(), "a '$' amount must not start maths in Jupyter"


def test_max_cost_stops_starting_fresh_calls(llm):
    conversations = make_conversations(20)
    one_call = km.estimate(conversations[:1], PROMPT, max_tokens=8).estimated_cost

    run = km.summarise(
        conversations, PROMPT, max_tokens=8, max_cost=one_call * 5.5, max_concurrency=1
    )

    assert 5 <= llm.request_count <= 8
    assert run.stats.skipped == 20 - run.stats.fresh
    assert run.stats.cost <= one_call * 5.5
    assert {r.status for r in run} == {"ok", "skipped"}


def test_max_cost_on_an_unpriced_model_is_refused_before_any_call(llm):
    with pytest.raises(km.BudgetError, match="no price"):
        km.summarise(make_conversations(2), PROMPT, model=UNPRICED_MODEL, max_cost=1.0)
    assert llm.request_count == 0


def test_results_keep_input_order_and_table_escapes_model_text(llm_server, llm):
    llm_server.reply = lambda messages: "<script>alert(1)</script>"
    try:
        run = km.summarise(make_conversations(2), PROMPT)
    finally:
        llm_server.reply = None
    page = run._repr_html_()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    frame = run.to_pandas()
    assert list(frame["conversation_id"]) == ["c0", "c1"]
    assert list(frame.columns[:2]) == ["conversation_id", "summary"]


def test_complete_is_cached_and_reports_it(llm):
    first = km.complete("Say hello")
    second = km.complete("Say hello")
    assert llm.request_count == 1
    assert (first.cached, second.cached) == (False, True)
    assert second.cost == 0 and second.saved_cost == pytest.approx(first.cost)
    assert second.text == first.text and first.usage.total_tokens > 0


def test_complete_with_a_schema_returns_the_parsed_object(llm):
    reply = km.complete([{"role": "user", "content": "Rate it"}], schema=_schema_v2())
    assert 1 <= reply.parsed.urgency <= 3


def test_complete_raises_on_refusal_and_the_refusal_is_cached(llm):
    for attempt in range(2):
        with pytest.raises(km.ResponseError, match="content_policy") as caught:
            km.complete("please [[refuse]]")
        assert caught.value.cached is (attempt == 1)
    assert llm.request_count == 1


def test_identical_calls_in_flight_at_once_are_made_once(llm):
    llm.latency_s = 0.2

    async def three_at_once():
        return await asyncio.gather(*(km.acomplete("same question") for _ in range(3)))

    replies = asyncio.run(three_at_once())
    assert llm.request_count == 1
    assert sorted(r.cached for r in replies) == [False, True, True]


def test_checkpoint_reloads_a_finished_run_and_a_changed_prompt_never_loads_it(llm, tmp_path):
    conversations = make_conversations(4)
    first = km.summarise(conversations, PROMPT, checkpoint=tmp_path / "ck")
    saved = list((tmp_path / "ck").glob("summaries-*.jsonl"))
    assert len(saved) == 1
    km.clear_all_caches()

    again = km.summarise(conversations, PROMPT, checkpoint=tmp_path / "ck")
    assert llm.request_count == 4, "served from the checkpoint, not the (cleared) cache"
    assert [r.summary for r in again] == [r.summary for r in first]
    assert again.stats.cached == 4
    assert again.stats.saved_cost == pytest.approx(first.stats.cost)

    changed = km.summarise(conversations, PROMPT + "\nBe brief.", checkpoint=tmp_path / "ck")
    assert changed.stats.fresh == 4 and llm.request_count == 8
    assert len(list((tmp_path / "ck").glob("summaries-*.jsonl"))) == 2


def test_checkpoint_keeps_schema_objects(llm, tmp_path):
    schema = _schema_v2()
    km.summarise(make_conversations(2), PROMPT, schema=schema, checkpoint=tmp_path)
    again = km.summarise(make_conversations(2), PROMPT, schema=schema, checkpoint=tmp_path)
    assert all(isinstance(r.summary, schema) for r in again)
    assert llm.request_count == 2
