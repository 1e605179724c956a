"""The run history: every run recorded (disk and Redis), listed, loaded back with no call,
compared, pruned, cleared, exported; a store that cannot keep it costs one warning."""

from __future__ import annotations

import sqlite3
import threading
import time
import warnings

import pytest

import kura_magic as km
from kura_magic.views.history import RunHistory
from helpers import MODEL, PROMPT, UNPRICED_MODEL, make_conversations, requires_redis
from kura_magic.run import history
from kura_magic import storage as store
from kura_magic.errors import CacheError, ConfigError, DataError
from kura_magic.storage.redis import RedisStore
from kura_magic.testing import RedisServer

OTHER_PROMPT = "Summarise this support chat in two short lines:\n{{ transcript }}"  # 3 words changed


def fresh_process() -> None:
    """Forget every open store, as a new kernel would have none."""
    store.close_all()
    history._answer_stores.clear()  # the stores runs were given with store=, held for this process


def test_every_run_is_recorded_with_what_made_it(backend, llm):
    conversations = make_conversations(4)
    run = km.summarise(conversations, PROMPT, label="v1", cell="demo.ipynb In [3]", params={"seed": 7},
                       schema="KuraSummary")

    record = history.find_record("v1")
    assert record.run_id == run.run_id and len(run.run_id) == 8
    assert (record.label, record.cell, record.experiment, record.model) == ("v1", "demo.ipynb In [3]", "default", MODEL)
    assert record.prompt == PROMPT.strip() and record.prompt_hash == history.prompt_hash(PROMPT)
    assert record.params == {"temperature": 0.0, "max_tokens": None, "seed": 7}
    assert record.schema_name == "KuraSummary" and "concerning_score" in str(record.json_schema)
    assert record.stats.fresh == 4 and record.stats.cost == pytest.approx(run.stats.cost)

    frame = km.runs()
    assert frame[["run_id", "label", "prompt_hash", "conversations", "fresh"]].values.tolist() == [
        [run.run_id, "v1", history.prompt_hash(PROMPT), 4, 4]]
    assert km.cache_info().entries == 4, "the history stays out of the cache's counts"


def test_a_recorded_run_is_rebuilt_from_the_cache_without_a_request(backend, llm):
    conversations = make_conversations(5)
    text_run = km.summarise(conversations, PROMPT, label="text")
    structured = km.summarise(conversations, PROMPT, label="structured", schema="KuraSummary")
    fresh_process()
    llm.reset()

    loaded_text, loaded_structured = km.load_run("text"), km.load_run("structured")

    assert llm.request_count == 0
    assert [r.summary for r in loaded_text] == [r.summary for r in text_run]
    assert [r.key for r in loaded_text] == [r.key for r in text_run]
    assert [r.summary_fields() for r in loaded_structured] == [r.summary_fields() for r in structured]
    assert loaded_structured[0].summary_text() == structured[0].summary_text()
    assert loaded_text.missing == [] and loaded_text.run_id == text_run.run_id
    assert loaded_text.stats.fresh == 5 and loaded_text.prompt == PROMPT.strip()


def test_answers_that_left_the_cache_are_listed_not_a_crash(backend, llm):
    km.summarise(make_conversations(3), PROMPT, label="v1")
    km.clear_cache("default")  # the answers go; the history stays
    llm.reset()

    loaded = km.load_run("v1")

    assert llm.request_count == 0
    assert loaded.missing == ["c0", "c1", "c2"]
    assert {r.status for r in loaded} == {"error"} and "no longer in the cache" in loaded[0].error
    assert "3 answers missing from the cache" in repr(loaded)


def test_runs_are_named_by_out_name_short_id_or_position(backend, llm):
    conversations = make_conversations(2)
    first = km.summarise(conversations, PROMPT, label="v1")
    second = km.summarise(conversations, OTHER_PROMPT, label="v2")
    third = km.summarise(conversations, OTHER_PROMPT, label="v1")

    assert history.find_record(-1).run_id == history.find_record("-1").run_id == third.run_id
    assert history.find_record("-3").run_id == first.run_id
    assert history.find_record("v1").run_id == third.run_id, "a name means its latest run"
    assert history.find_record(second.run_id[:6]).run_id == second.run_id
    with pytest.raises(ConfigError, match="only 3 runs are recorded"):
        history.find_record("-4")
    with pytest.raises(ConfigError, match=f"no recorded run 'nope'.*latest is {third.run_id}"):
        history.find_record("nope")


def test_filters_by_experiment_prompt_hash_and_last_n(backend, llm):
    conversations = make_conversations(2)
    km.summarise(conversations, PROMPT)
    km.summarise(conversations, OTHER_PROMPT)
    km.summarise(conversations, OTHER_PROMPT, experiment="other")

    assert km.runs(experiment="other")["experiment"].tolist() == ["other"]
    assert len(km.runs(prompt=history.prompt_hash(OTHER_PROMPT)[:4])) == 2
    assert km.runs(last=2)["experiment"].tolist() == ["default", "other"]


def test_the_history_keeps_the_newest_runs_up_to_its_limit(backend, llm, monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_HISTORY_LIMIT", "3")
    for n in range(5):
        km.summarise(make_conversations(1), PROMPT, label=f"run{n}")

    assert km.runs()["label"].tolist() == ["run2", "run3", "run4"]
    with pytest.raises(ConfigError, match="no recorded run 'run0'"):
        km.load_run("run0")
    leftover = store.open_store(km.config.settings(), "runs").keys(experiment="default")
    assert len(leftover) == 6, "a pruned run leaves neither its record nor its rows"


def test_clearing_all_caches_keeps_the_history_unless_asked(backend, llm):
    km.summarise(make_conversations(2), PROMPT, experiment="a")
    km.summarise(make_conversations(2), PROMPT, experiment="b")

    assert km.clear_all_caches() == 4
    assert km.cache_info().entries == 0 and len(km.runs()) == 2, "the history cannot be rebuilt: it stays"
    assert km.clear_all_caches(history=True) == 0
    assert len(km.runs()) == 0
    with pytest.raises(ConfigError, match="no runs are recorded yet"):
        km.load_run(-1)


def test_each_run_says_what_changed_since_the_previous_run_of_its_name(backend, llm):
    conversations = make_conversations(4)
    first = km.summarise(conversations, PROMPT, label="s")
    changed = km.summarise(conversations, OTHER_PROMPT, label="s")
    more = km.summarise(conversations + make_conversations(2, prefix="n", text="refund"), OTHER_PROMPT, label="s")
    other_model = km.summarise(conversations, OTHER_PROMPT, label="s", model=UNPRICED_MODEL)

    assert first.changes == "" and km.summarise(conversations, PROMPT).changes == "", "no previous run, no name"
    assert changed.changes == f"since run {first.run_id}: prompt changed (3 words) · 4 fresh · 0 unchanged answers reused"
    assert more.changes == f"since run {changed.run_id}: nothing changed · 2 fresh · 4 unchanged answers reused"
    assert other_model.changes.startswith(f"since run {more.run_id}: model {MODEL} → {UNPRICED_MODEL} · 4 fresh")


def test_compare_recorded_runs_across_a_restart(backend, llm):
    conversations = make_conversations(3)
    conversations[2]["messages"][0]["content"] = "<script>alert(1)</script> $5 and $6"
    km.summarise(conversations, PROMPT, label="v1")
    km.summarise(conversations[:2], PROMPT, label="v2", model=UNPRICED_MODEL)
    fresh_process()
    llm.reset()

    comparison = km.compare("-2", "-1", changed_only=True)

    assert llm.request_count == 0
    assert comparison.changed == 0 and comparison.frame["differs"].tolist() == [False, False, False]
    assert list(comparison.only_in.values()) == [1], "the third is only in v1: shown, and counted apart"
    assert f"model: {MODEL} → {UNPRICED_MODEL}" in repr(comparison)
    assert "prompt: the same in both runs" in repr(comparison)
    html = comparison._repr_html_()
    assert "<script" not in html and "&lt;script&gt;" in html
    assert html.count("<tr") == 2, "the header and the one changed row"


def test_export_carries_the_history_to_a_teammate(backend, llm, tmp_path):
    run = km.summarise(make_conversations(3), PROMPT, label="v1", experiment="shared")
    exported = tmp_path / "shared.jsonl"
    assert km.export_experiment(exported, "shared") == 3
    km.clear_all_caches(history=True)  # the teammate's machine: nothing cached, no history
    llm.reset()

    assert km.import_experiment(exported, "replay") == 3
    frame = km.runs(experiment="replay")
    assert frame[["run_id", "label", "prompt_hash"]].values.tolist() == [[run.run_id, "v1", history.prompt_hash(PROMPT)]]
    loaded = km.load_run(run.run_id)
    assert loaded.experiment == "replay" and loaded.missing == []
    assert [r.summary for r in loaded] == [r.summary for r in run]
    assert llm.request_count == 0


def test_a_damaged_run_record_in_an_export_names_its_line(backend, llm, tmp_path):
    km.summarise(make_conversations(2), PROMPT, experiment="shared")
    exported = tmp_path / "shared.jsonl"
    km.export_experiment(exported, "shared")
    lines = exported.read_text().splitlines()
    exported.write_text("\n".join([*lines[:-1], '{"run": {"record": {"run_id": 3}}}']) + "\n")

    with pytest.raises(DataError, match=f"line {len(lines)}: not an exported run record"):
        km.import_experiment(exported, "replay")
    assert km.cache_info("replay").experiments["replay"].entries == 2, "the answers before it are kept"


@pytest.mark.disk_only
def test_a_history_store_that_cannot_open_is_one_warning_and_the_run_is_whole(backend, llm, tmp_path):
    (tmp_path / "cache").mkdir(exist_ok=True)
    (tmp_path / "cache" / "runs").write_text("not a directory")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = km.summarise(make_conversations(3), PROMPT, label="v1")

    notes = [str(w.message) for w in caught if "run history" in str(w.message)]
    assert len(notes) == 1 and "cannot open the cache directory" in notes[0]
    assert len(run) == 3 and run.stats.fresh == 3 and run.run_id is None
    with pytest.raises(CacheError, match="Point KURA_MAGIC_CACHE at a writable directory"):
        km.runs()


@requires_redis
def test_a_redis_that_is_down_is_one_history_warning_and_the_run_is_whole(llm, monkeypatch):
    server = RedisServer().start()
    server.kill()
    monkeypatch.setenv("KURA_MAGIC_CACHE", server.url)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = km.summarise(make_conversations(3), PROMPT, label="v1")

    assert len([w for w in caught if "not recorded in the run history" in str(w.message)]) == 1
    assert len([w for w in caught if "cannot be reached" in str(w.message)]) == 1
    assert len(run) == 3 and {r.status for r in run} == {"ok"} and run.run_id is None


# ---------------------------------------------------------------- runs made with store=


def test_a_run_made_with_its_own_store_is_loaded_from_that_store_after_a_restart(llm, tmp_path):
    own = store.open_store(km.config.Settings(cache=str(tmp_path / "own")))
    run = km.summarise(make_conversations(3), PROMPT, store=own)
    history.record_run(run, answers=own)  # what summarise does, given the store it answered into
    fresh_process()
    llm.reset()

    loaded = km.load_run(run.run_id)

    assert history.find_record(run.run_id).answers == history.AnswerStore(kind="disk", location=str(tmp_path / "own"))
    assert loaded.missing == [] and [r.summary for r in loaded] == [r.summary for r in run]
    assert llm.request_count == 0 and km.cache_info().entries == 0, "the settings' cache was never used"


def test_a_store_the_record_cannot_reopen_is_said_and_can_be_passed_again(llm):
    own = km.storage.MemoryStore()
    run = km.summarise(make_conversations(2), PROMPT, store=own)
    history.record_run(run, answers=own)

    assert km.load_run(run.run_id).missing == [], "still open in this process"
    fresh_process()
    lost = km.load_run(run.run_id)
    assert lost.missing == ["c0", "c1"]
    assert "the memory store given as store=, which cannot be reopened" in lost[0].error
    assert "load_run(ref, answers=that_store)" in lost[0].error
    assert km.load_run(run.run_id, answers=own).missing == []
    assert llm.request_count == 2


@requires_redis
def test_a_redis_store_is_recorded_without_its_password(redis_server: RedisServer, llm):
    url = redis_server.url.replace("redis://", "redis://:hunter2@")
    own = RedisStore(url, prefix="own")
    run = km.summarise(make_conversations(1), PROMPT)
    history.record_run(run, answers=own)

    record = history.find_record(run.run_id)
    assert record.answers.kind == "redis" and "hunter2" not in record.model_dump_json()
    assert record.answers.location.startswith("redis://:***@")


@requires_redis
def test_two_redis_stores_on_one_server_are_told_apart_by_their_prefix(redis_server: RedisServer, llm):
    runs = {}
    for prefix in ("team-a", "team-b"):
        runs[prefix] = km.summarise(make_conversations(1), PROMPT)
        history.record_run(runs[prefix], answers=RedisStore(redis_server.url, prefix=prefix))

    where = {prefix: history.find_record(run.run_id).answers.location for prefix, run in runs.items()}
    assert where["team-a"] != where["team-b"]
    assert all(prefix in where[prefix] for prefix in where)


def test_recording_a_run_leaves_other_threads_warnings_alone(llm, recwarn, tmp_path):
    run = km.summarise(make_conversations(1), PROMPT)
    database = tmp_path / "cache" / "runs" / "cache.db"
    lock = sqlite3.connect(database, isolation_level=None, timeout=10)
    lock.execute("BEGIN EXCLUSIVE")  # the history's next write waits for this
    recording = threading.Thread(target=history.record_run, args=(run,))
    recording.start()
    time.sleep(0.5)  # let the recording thread reach its write
    warnings.warn("the notebook's own warning", UserWarning)
    lock.execute("COMMIT")
    recording.join()

    assert [str(w.message) for w in recwarn.list if w.category is UserWarning] == ["the notebook's own warning"]
    assert len(km.runs()) == 2


def test_the_same_run_made_again_from_the_cache_is_folded_into_one_row(backend, llm, monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_HISTORY_LIMIT", "3")
    conversations = make_conversations(3)
    first = km.summarise(conversations, PROMPT, label="v1")
    km.summarise(conversations, PROMPT.replace("one line", "a sentence"), label="v2")
    again = [km.summarise(conversations, PROMPT.replace("one line", "a sentence"), label="v2") for _ in range(10)]

    table = km.runs()

    assert table["label"].tolist() == ["v1", "v2"], "ten cached repeats did not push v1 out"
    assert table["repeats"].tolist() == [0, 10]
    assert {run.run_id for run in again} == {table["run_id"].tolist()[1]}
    assert again[-1].changes.endswith("all cached (made 11 times)")
    assert km.load_run("v1").run_id == first.run_id
    assert "×10" in repr(RunHistory(table))


def test_a_run_given_no_label_is_named_in_the_history(backend, llm):
    km.summarise(make_conversations(2), PROMPT)
    assert km.runs()["label"].tolist() == ["summarise()"]
