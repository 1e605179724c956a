"""The store works in batches: a run's hits, an embedding batch, an import or export chunk
each cost one transaction on disk (counted by a sqlite trace on the store's own connection)
or one round trip on Redis (counted by the server's INFO commandstats). A batch that fails
is a miss or an unsaved write with one warning, never a lost answer."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import redis as redis_py
from helpers import EMBEDDING_MODEL, PROMPT, make_conversations

import kura_magic as km
from kura_magic.calls import calls
from kura_magic.storage import disk as disk_store
from kura_magic.storage import StoreScope, open_store
from kura_magic.storage.responses import ResponseStore
from kura_magic.testing import RedisServer, embedding_for
from kura_magic.testing.redis import _free_port
from kura_magic.types import CacheEntry

ENTRIES = 2_500  # three batches of at most 1,000


@contextmanager
def trips(backend: str, scope: StoreScope = "responses") -> Iterator[Counter[str]]:
    """What the store asked of its storage inside the block, on this thread: on disk the
    transactions begun ("BEGIN"), on Redis the commands by name ("mget", "exec", "set")."""
    seen: Counter[str] = Counter()
    if backend == "s3":
        pytest.skip("S3 has no batch request: a GET or PUT per key, many at once (tests/test_s3.py)")
    if backend == "disk":
        with traced(open_store(km.config.settings(), scope)._cache._con, seen):
            yield seen
        return
    client = redis_py.Redis.from_url(km.config.settings().cache)
    client.config_resetstat()
    yield seen
    stats = client.info("commandstats")
    seen.update({name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()})


@contextmanager
def traced(connection: sqlite3.Connection, seen: Counter[str]) -> Iterator[None]:
    """Count the statements `connection` runs inside the block by their first word."""
    connection.set_trace_callback(lambda sql: seen.update([sql.split()[0].upper()]))
    try:
        yield
    finally:
        connection.set_trace_callback(None)


def batches(seen: Counter[str], backend: str) -> int:
    """Transactions on disk; MULTI/EXEC blocks on Redis."""
    return seen["BEGIN"] if backend == "disk" else seen["exec"]


def exported_file(path: Path, n: int) -> Path:
    """An export of `n` entries, as `export_experiment` writes them."""
    lines = (json.dumps({"key": f"km2-chat-{i:05d}", "entry": {"model": "m", "response": f"r{i}"}})
             for i in range(n))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_runs_hits_are_read_in_one_batch(backend, llm):
    conversations = make_conversations(120)
    km.summarise(conversations, PROMPT)

    with trips(backend) as seen:
        run = asyncio.run(km.asummarise(conversations, PROMPT))  # on this thread, to be traced

    assert run.stats.cached == 120 and llm.request_count == 120
    if backend == "disk":
        # entries used within the refresh period (a day): plain reads, nothing written
        assert seen["BEGIN"] == seen["UPDATE"] == 0, "the 120 hits were read without a write"
    else:
        assert "get" not in seen, "no hit was fetched on its own"


def test_a_runs_answers_and_lease_releases_are_stored_together(backend, llm, monkeypatch):
    monkeypatch.setattr(calls, "FLUSH_S", 60.0)  # no flush on the clock: when the last call is in
    llm.latency_s = 0.5  # all 40 out together
    conversations = make_conversations(40)
    leases: Counter[str] = Counter()

    with trips(backend) as seen:
        if backend == "disk":
            with traced(open_store(km.config.settings())._leases._con, leases):
                run = asyncio.run(km.asummarise(conversations, PROMPT, max_concurrency=40))
        else:
            run = asyncio.run(km.asummarise(conversations, PROMPT, max_concurrency=40))

    assert run.stats.fresh == 40 and llm.request_count == 40
    if backend == "disk":
        assert seen["BEGIN"] == 1, "the hits read without a transaction, the 40 answers in one write"
        assert leases["BEGIN"] == 2, "the 40 leases claimed in one go, let go in another"
    else:
        assert seen["exec"] == 1, "the 40 answers in one MULTI/EXEC"
        assert seen["mget"] == 2, "the hits read in one go, the claimed keys looked at again in one"
    assert km.summarise(conversations, PROMPT).stats.cached == 40 and llm.request_count == 40


def test_a_run_that_fails_stores_every_answer_it_had(backend, llm, monkeypatch):
    monkeypatch.setattr(calls, "FLUSH_S", 60.0)  # only the flush on the way out can store them
    conversations = make_conversations(30)

    def broken_panel(stats: km.RunStats) -> None:
        if stats.fresh >= 5:
            raise RuntimeError("the panel broke")

    with pytest.raises(RuntimeError, match="the panel broke"):
        km.summarise(conversations, PROMPT, max_concurrency=2, on_progress=broken_panel)

    again = km.summarise(conversations, PROMPT)
    assert again.stats.cached >= 5, "the answers that came back before the failure were kept"


def test_an_import_is_one_transaction_per_thousand_entries(backend, tmp_path):
    exported = exported_file(tmp_path / "big.jsonl", ENTRIES)

    with trips(backend) as seen:
        assert km.import_experiment(exported, "big") == ENTRIES

    assert batches(seen, backend) == 3
    assert km.cache_info().for_experiment("big").entries == ENTRIES


def test_an_export_reads_in_batches_and_round_trips(backend, tmp_path):
    km.import_experiment(exported_file(tmp_path / "in.jsonl", ENTRIES), "big")

    with trips(backend) as seen:
        assert km.export_experiment(tmp_path / "out.jsonl", "big") == ENTRIES

    if backend == "disk":
        assert seen["BEGIN"] == 0, "exporting is not a use: no access time is written"
    else:
        assert seen["mget"] == 3 and "get" not in seen
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(row["key"] for row in rows) == [f"km2-chat-{i:05d}" for i in range(ENTRIES)]
    assert all(CacheEntry.model_validate(row["entry"]).response for row in rows)


@pytest.mark.disk_only
def test_an_export_goes_on_while_another_process_holds_the_write_lock(backend, tmp_path, monkeypatch):
    monkeypatch.setattr(disk_store, "STORAGE_TIMEOUT_S", 0.2)  # wait less for the lock
    km.import_experiment(exported_file(tmp_path / "in.jsonl", 20), "small")
    assert km.export_experiment(tmp_path / "first.jsonl", "small") == 20

    with write_locked(tmp_path / "cache" / "cache.db"), warnings.catch_warnings():
        warnings.simplefilter("error")  # a CacheWarning (the lock waited for) fails the test
        assert km.export_experiment(tmp_path / "out.jsonl", "small") == 20


def test_each_embedding_batch_is_written_at_once(backend, llm, monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_EMBEDDING_BATCH_SIZE", "100")
    texts = [f"text {i}" for i in range(250)]

    with trips(backend, "embeddings") as seen:
        result = asyncio.run(km.aembed(texts, model=EMBEDDING_MODEL, dimensions=8))

    assert result.fresh_count == 250 and len(llm.embedding_requests) == 3
    assert batches(seen, backend) == 3, "three writes (the read of the hits is no transaction on disk)"
    assert km.embed(texts, model=EMBEDDING_MODEL, dimensions=8).cached_count == 250


def test_a_corrupt_entry_in_a_batch_is_a_miss_and_is_dropped(backend, tmp_path):
    store = open_store(km.config.settings())
    entries = {f"k{i}": CacheEntry(model="m", response=f"r{i}") for i in range(3)}
    assert ResponseStore(store).set_many(entries, experiment="x") == 3
    store.write_bytes("k1", b"{not json", experiment="x")

    with pytest.warns(km.CacheWarning, match="k1 was unreadable"):
        found = ResponseStore(store).get_many(list(entries), experiment="x")

    assert sorted(found) == ["k0", "k2"]
    assert sorted(store.keys(experiment="x")) == ["k0", "k2"], "the corrupt entry is gone"
    assert km.export_experiment(tmp_path / "x.jsonl", "x") == 2


@pytest.fixture
def store_down(backend, tmp_path, monkeypatch) -> Iterator[None]:
    """The store cannot be used: on disk another process holds the write lock of both
    databases; on Redis or S3 the server is gone."""
    if backend == "s3":
        monkeypatch.setenv("KURA_MAGIC_S3_ENDPOINT", f"http://127.0.0.1:{_free_port('127.0.0.1')}")
        yield
        return
    if backend == "redis":
        server = RedisServer().start()
        server.kill()
        monkeypatch.setenv("KURA_MAGIC_CACHE", server.url)
        yield
        return
    monkeypatch.setattr(disk_store, "STORAGE_TIMEOUT_S", 0.2)  # wait less for the lock
    for scope in ("responses", "embeddings"):
        open_store(km.config.settings(), scope)
    cache = tmp_path / "cache"
    with write_locked(cache / "cache.db"), write_locked(cache / "embeddings" / "cache.db"):
        yield


@contextmanager
def write_locked(database: Path) -> Iterator[None]:
    """Another connection holds the write lock of `database` (as another process would)."""
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.close()


def test_an_import_into_a_store_that_is_down_warns_once_and_keeps_nothing(backend, store_down, tmp_path):
    exported = exported_file(tmp_path / "big.jsonl", ENTRIES)

    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        kept = km.import_experiment(exported, "big")

    assert kept == 0
    assert len([w for w in warned if issubclass(w.category, km.CacheWarning)]) == 1


def test_an_embedding_batch_the_store_cannot_keep_is_one_warning_and_every_vector(backend, store_down, llm):
    texts = [f"text {i}" for i in range(50)]

    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        result = km.embed(texts, model=EMBEDDING_MODEL, dimensions=8)

    assert result.fresh_count == 50
    np.testing.assert_array_equal(result.to_numpy(), np.array([embedding_for(t, 8) for t in texts], "<f4"))
    problems = [str(w.message) for w in warned if issubclass(w.category, km.CacheWarning)]
    assert len([p for p in problems if "write" in p or "cannot be reached" in p]) == 1, problems
