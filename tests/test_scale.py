"""Runs over many conversations: a JSONL file read a line at a time, results held as
columns (a row object made only when asked for), provenance that stays small."""

from __future__ import annotations

import gc
import json

import pandas
import pytest
from pydantic import BaseModel

import kura_magic as km
from kura_magic.errors import DataError
from kura_magic.inputs.loaders import iter_conversations
from kura_magic.run.results import KEYS_SHOWN, SummaryResult, SummaryRun
from kura_magic.storage.runlog import records
from kura_magic.types import RunStats, Usage
from helpers import API_KEY, MODEL, PROMPT, make_conversations

ROWS = 1100  # past one batch of 1,000 conversations


def write_jsonl(path, rows: list) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def live_results() -> int:
    gc.collect()
    return sum(isinstance(thing, SummaryResult) for thing in gc.get_objects())


def per_row_frame(run: SummaryRun) -> pandas.DataFrame:
    """The table as it was built before: one dict per row."""
    return pandas.DataFrame([
        {"conversation_id": r.conversation_id, **r.summary_fields(), "cached": r.cached, "cost": r.cost,
         "latency_s": r.latency_s, "error": r.error, "status": r.status}
        for r in run.results
    ])


def test_a_jsonl_file_is_read_a_line_at_a_time(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text('{"id": "a", "text": "hi"}\n\n{"id": "b", "text": "bye"}\n{not json\n', encoding="utf-8")
    conversations = iter_conversations(path)
    assert [next(conversations).chat_id, next(conversations).chat_id] == ["a", "b"]
    with pytest.raises(DataError, match="line 4 is not valid JSON"):
        next(conversations)


def test_an_empty_jsonl_file_holds_no_conversations(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no conversations"):
        list(iter_conversations(path))


def test_a_bad_last_line_stops_the_run_before_any_call(llm, tmp_path):
    path = tmp_path / "chats.jsonl"
    write_jsonl(path, [*make_conversations(ROWS), {"chat_id": "bad", "messages": []}])
    with pytest.raises(DataError, match=f"row {ROWS} .* field 'messages'"):
        km.summarise(path, PROMPT, model=MODEL, api_key=API_KEY)
    assert llm.chat_requests == []


def test_a_run_over_a_jsonl_path_gives_the_list_s_results_in_order(llm, tmp_path):
    data = make_conversations(ROWS)
    data.append({**data[5], "chat_id": "again"})  # a repeat, in the next batch, of a call still to make
    path = tmp_path / "chats.jsonl"
    write_jsonl(path, data)

    fresh = km.summarise(path, PROMPT, model=MODEL, api_key=API_KEY)
    assert len(llm.chat_requests) == ROWS
    assert (fresh.stats.fresh, fresh.stats.cached) == (ROWS, 1)
    cached = km.summarise(data, PROMPT, model=MODEL, api_key=API_KEY)
    assert len(llm.chat_requests) == ROWS
    assert cached.stats.cached == ROWS + 1
    assert [r.conversation_id for r in cached] == [row["chat_id"] for row in data]
    assert [r.summary for r in cached] == [r.summary for r in fresh]
    assert cached[-1].summary == cached[5].summary and cached[-1].metadata == {"row": 5}
    pandas.testing.assert_frame_equal(cached.to_pandas(), per_row_frame(cached))


def test_row_objects_are_made_only_when_asked_for(llm):
    run = km.summarise(make_conversations(50), PROMPT, model=MODEL, api_key=API_KEY)
    before = live_results()
    assert before == 0
    row = run[3]
    assert live_results() == 1
    assert (row.conversation_id, row.cached, row.status) == ("c3", False, "ok")
    assert row.usage.total_tokens > 0 and row.metadata == {"row": 3} and row.summary == run[3].summary
    assert len(run.results) == 50 and [r.conversation_id for r in run.results[-2:]] == ["c48", "c49"]
    assert [r.conversation_id for r in reversed(run.results)][:1] == ["c49"]


class Verdict(BaseModel):
    summary: str
    score: int


def test_to_pandas_from_columns_equals_the_row_by_row_table_for_schema_rows_and_errors():
    results = [
        SummaryResult(conversation_id="a", summary=Verdict(summary="ok", score=3), cost=0.001, key="k1",
                      usage=Usage(prompt_tokens=5, completion_tokens=2)),
        SummaryResult(conversation_id="b", status="error", error="content_policy: refused", key="k2", cost=None),
        SummaryResult(conversation_id="c", summary=Verdict(summary="fine", score=5), cached=True, cost=0.0, key="k3"),
    ]
    run = SummaryRun(results, RunStats(), model="m", experiment="e")
    pandas.testing.assert_frame_equal(run.to_pandas(), per_row_frame(run))
    assert [r.model_dump() for r in run.results] == [r.model_dump() for r in results]


def test_the_provenance_of_a_large_run_names_its_keys_by_digest(llm):
    run = km.summarise(make_conversations(KEYS_SHOWN + 1), PROMPT, model=MODEL, api_key=API_KEY)
    provenance = run.provenance()
    assert "keys" not in provenance and provenance["key_count"] == KEYS_SHOWN + 1
    assert provenance["keys_digest"] == records()[-1].keys_digest
    small = km.summarise(make_conversations(3), PROMPT, model=MODEL, api_key=API_KEY).provenance()
    assert small["keys"] == [r.key for r in km.load_run(-1)] and small["key_count"] == 3


def test_showing_a_large_run_makes_only_the_rows_it_shows(monkeypatch):
    from kura_magic import formatting
    from kura_magic.run.results import ResultTable
    from kura_magic.views.results_table import EMBED_ROWS

    rows = [SummaryResult(conversation_id=f"c{i}", summary=f"answer {i}", cached=True, cost=0.0,
                          status="skipped" if i % 1000 == 0 else "ok", error="skipped: budget" if i % 1000 == 0 else None)
            for i in range(30_000)]
    run = SummaryRun(rows, RunStats(total=30_000, cached=29_970, skipped=30), model=MODEL, experiment="e")
    made = []
    real_row = ResultTable.row
    monkeypatch.setattr(ResultTable, "row", lambda table, index: made.append(index) or real_row(table, index))
    bundle, _ = run._repr_mimebundle_()
    assert "30 calls skipped: budget" in bundle["text/plain"]
    assert "all 30000 rows (29950 more not shown)" in bundle["text/plain"]
    assert f"holds the first {EMBED_ROWS:,} of 29,970 rows" in bundle["text/html"]
    assert len(made) <= 2 * (EMBED_ROWS + formatting.TEXT_ROWS + 30)
