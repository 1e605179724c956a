"""The cache stores: JSON only, experiments, eviction, and damage read as a miss."""

from __future__ import annotations

import os
import pickle
import sqlite3

import diskcache
import pytest

import kura_magic as km
from kura_magic.errors import CacheWarning
from kura_magic.storage.disk import DiskStore
from kura_magic.storage.responses import ResponseStore
from kura_magic.run.embeddings import embedding_key
from kura_magic.inputs.schemas import resolve_schema
from kura_magic.storage import MemoryStore, open_store
from kura_magic.types import CacheEntry, ChatRequest
from helpers import API_KEY, PROMPT, make_conversations

pytestmark = pytest.mark.usefixtures("backend")  # each test runs on disk and on Redis


@pytest.fixture(params=["selected", "memory"])
def store(request, backend):
    """The store this run is for (disk or Redis), and the in-memory one."""
    if request.param == "selected":
        return open_store(km.config.settings())
    return MemoryStore(size_limit=10**7)


def entry(text: str = "hi", cost: float | None = 0.01) -> CacheEntry:
    return CacheEntry(model="openai/gpt-4o-mini", response=text, cost=cost)


def test_entries_round_trip_per_experiment(store):
    ResponseStore(store).set("k1", entry("one"), experiment="a")
    ResponseStore(store).set("k2", entry("two"), experiment="b")

    assert ResponseStore(store).get("k1", experiment="a").response == "one"
    assert ResponseStore(store).get("k1", experiment="b") is None
    info = store.info()
    assert info.for_experiment("a").entries == 1 and info.for_experiment("b").entries == 1
    assert info.for_experiment("a").bytes > 0


def test_clearing_one_experiment_keeps_the_others(store):
    ResponseStore(store).set("k", entry(), experiment="a")
    ResponseStore(store).set("k", entry(), experiment="b")

    assert store.clear("a") == 1
    assert ResponseStore(store).get("k", experiment="a") is None
    assert ResponseStore(store).get("k", experiment="b") is not None
    assert store.clear() == 1
    assert store.info().entries == 0


@pytest.mark.disk_only
def test_lru_eviction_keeps_the_store_under_its_limit(tmp_path):
    store = DiskStore(tmp_path / "small", size_limit=200_000)
    big = "x" * 20_000
    for i in range(40):
        ResponseStore(store).set(f"k{i}", entry(big), experiment="default")
    sizes = store.info().for_experiment("default")
    assert sizes.entries < 40
    assert sizes.bytes <= 200_000


def test_memory_store_evicts_least_recently_used():
    one = len(entry("y" * 200).model_dump_json())
    store = MemoryStore(size_limit=int(one * 3.5))
    for i in range(3):
        ResponseStore(store).set(f"k{i}", entry("y" * 200), experiment="e")
    ResponseStore(store).get("k0", experiment="e")  # k0 is now the most recently used
    ResponseStore(store).set("k3", entry("y" * 200), experiment="e")
    assert ResponseStore(store).get("k0", experiment="e") is not None
    assert ResponseStore(store).get("k1", experiment="e") is None


@pytest.mark.disk_only
def test_a_corrupt_entry_is_a_miss_and_is_replaced(llm, tmp_path):
    conversations = make_conversations(2)
    first = km.summarise(conversations, PROMPT)
    raw = diskcache.Cache(str(tmp_path / "cache"))
    damaged = f"default::{first[0].key}"
    raw.set(damaged, b"{not json")
    raw.close()

    with pytest.warns(CacheWarning, match="unreadable"):
        second = km.summarise(conversations, PROMPT)

    assert (second.stats.fresh, second.stats.cached) == (1, 1)
    assert llm.request_count == 3
    assert km.summarise(conversations, PROMPT).stats.cached == 2


@pytest.mark.disk_only
def test_a_pickled_value_is_never_loaded(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    store = DiskStore(tmp_path / "shared")
    evil = diskcache.Cache(str(tmp_path / "shared"))
    evil.set("default::k", Boom())
    evil.close()

    with pytest.warns(CacheWarning):
        assert ResponseStore(store).get("k", experiment="default") is None
    assert not (tmp_path / "pwned").exists()


@pytest.mark.disk_only
def test_the_cache_directory_holds_no_pickle_and_no_api_key(llm, tmp_path):
    km.summarise(make_conversations(5), PROMPT)
    km.complete("hello there")

    directory = tmp_path / "cache"
    blobs = [p.read_bytes() for p in directory.rglob("*") if p.is_file()]
    assert blobs and not any(API_KEY.encode() in blob for blob in blobs)
    with sqlite3.connect(directory / "cache.db") as db:
        modes = {mode for (mode,) in db.execute("SELECT DISTINCT mode FROM Cache")}
        values = [value for (value,) in db.execute("SELECT value FROM Cache")]
    assert diskcache.core.MODE_PICKLE not in modes
    assert all(v is None or not bytes(v).startswith(pickle.PROTO) for v in values)


def test_a_cache_path_that_is_a_file_is_a_clear_error(tmp_path, monkeypatch, llm):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("I am a file")
    monkeypatch.setenv("KURA_MAGIC_CACHE", str(blocker))
    with pytest.raises(km.CacheError, match="not-a-dir"):
        km.summarise(make_conversations(1), PROMPT)
    assert llm.request_count == 0


@pytest.mark.parametrize("word", ["0", "false", "off", "OFF"])
def test_caching_can_be_switched_off(word, monkeypatch, llm):
    monkeypatch.setenv("KURA_MAGIC_CACHE", word)
    conversations = make_conversations(2)
    km.summarise(conversations, PROMPT)
    run = km.summarise(conversations, PROMPT)
    assert run.stats.fresh == 2 and llm.request_count == 4
    assert km.cache_info().enabled is False


def test_export_and_import_replays_an_experiment_offline(llm, tmp_path, monkeypatch):
    conversations = make_conversations(4)
    km.summarise(conversations, PROMPT, experiment="shared")
    exported = tmp_path / "shared.jsonl"
    assert km.export_experiment(exported, "shared") == 4

    monkeypatch.setenv("KURA_MAGIC_CACHE", str(tmp_path / "teammate"))
    monkeypatch.setenv("KURA_MAGIC_OFFLINE", "1")
    assert km.import_experiment(exported, "shared") == 4
    run = km.summarise(conversations, PROMPT, experiment="shared")
    assert run.stats.cached == 4 and llm.request_count == 4


def test_import_of_a_file_that_is_not_an_export_names_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "k", "entry": {"model": "m"}}\nnot json\n')
    with pytest.raises(km.DataError, match="line 2"):
        km.import_experiment(bad, "x")


@pytest.mark.disk_only
def test_cache_info_reports_directory_and_active_experiment(llm, tmp_path):
    km.summarise(make_conversations(2), PROMPT)
    info = km.cache_info()
    assert info.directory == str(tmp_path / "cache")
    assert info.entries == 2 and info.bytes > 0
    assert info.active_experiment == "default"
    assert set(km.cache_info("other").experiments) == {"other"}



def test_experiment_names_that_end_alike_stay_apart(llm, tmp_path):
    km.summarise(make_conversations(2), PROMPT, experiment="b")
    km.summarise(make_conversations(3), PROMPT, experiment="a:b")

    assert km.export_experiment(tmp_path / "b.jsonl", "b") == 2
    assert km.clear_cache("b") == 2
    assert km.cache_info().for_experiment("a:b").entries == 3


@pytest.mark.parametrize(("call", "key"), [
    ({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
     "km2-chat-3f1e59f49c2887afdd0f3a7e842d8681d38f9c8fc59e526b10b89f5213e7ea29"),
    ({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": 'héllo ☃ "q" \n'}],
      "params": {"temperature": 0.0, "max_tokens": None, "seed": 1, "api_key": "sk"}},
     "km2-chat-5c1b6612e4cd0fc268982e1ac8043f6bef68fe4feb9934b479a5dd838ab595c2"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "schema": "KuraSummary",
      "params": {"temperature": 0}},
     "km2-chat-9c2f8f1d27e1afb891fb9e5c0ea8f3334ea504b19dc2f458787bfa01b6b59ae9"),
    ({"model": "openai/text-embedding-3-small", "kind": "embedding",
      "messages": [{"role": "input", "content": "hi"}], "params": {"dimensions": 8}},
     "km2-embedding-1cbfec131750674f02354bf7b596cb2c15fd52fbbf0bd2c58d6da0ef80cd8d18"),
], ids=["plain", "params-and-unicode", "schema", "embedding"])
def test_cache_keys_never_change(call, key):
    """Every entry anyone has cached is found under these keys: a change loses them all
    (format 2 made equal numbers one key; entries of format 1 were missed once)."""
    if call.get("schema") is not None:
        call = {**call, "schema": resolve_schema(call["schema"], None)}
    assert km.cache_key(**call) == key
    if call.get("kind") == "embedding":
        assert embedding_key("hi", model=call["model"], dimensions=8) == key
    else:  # as a run's requests compute it
        request = ChatRequest(call["model"], tuple(call["messages"]), call.get("schema"), call.get("params", {}))
        assert request.key == key


@pytest.mark.parametrize(("first", "again"), [(0, 0.0), (1, 1.0), (0.0, 0), (1.0, 1)])
def test_numbers_that_compare_equal_are_one_entry(llm, first, again):
    conversations = make_conversations(4)
    km.summarise(conversations, PROMPT, temperature=first)
    sent = llm.request_count

    rerun = km.summarise(conversations, PROMPT, temperature=again)

    assert sent == 4 and llm.request_count == 4, "the re-run with an equal number sent nothing"
    assert rerun.stats.cached == 4


def test_numbers_that_differ_or_bools_stay_apart():
    def key(**params):
        return km.cache_key(model="m", messages=[{"role": "user", "content": "x"}], params=params)

    assert key(temperature=0.5) != key(temperature=0)
    assert key(seed=1) != key(seed=True), "a bool is not a number in a key"
    assert key(stop=[1.0, 2]) == key(stop=[1, 2.0])
    assert key(logit_bias={"50256": -100.0}) == key(logit_bias={"50256": -100})
