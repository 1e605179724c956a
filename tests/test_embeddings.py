"""embed(): per-text cache, partial hits, batched misses, LRU cap, counted on the server."""

from __future__ import annotations

import asyncio
import sqlite3
import json
import subprocess
import sys
from pathlib import Path

import diskcache
import numpy as np
import pytest

from kura_magic.calls import gateway
from kura_magic import storage as store
from kura_magic.errors import CacheWarning
from kura_magic.config import settings
from kura_magic.run.embeddings import (
    Embeddings,
    aembed,
    clear_embedding_cache,
    embed,
    embedding_cache_info,
    embedding_key,
)
from kura_magic.errors import AuthenticationError, CacheMissError, ConfigError, DataError, ResponseError
from kura_magic.storage.vectors import open_embedding_store
from kura_magic.testing import embedding_for

from helpers import EMBEDDING_RACER, UNPRICED_MODEL, race_two_processes

pytestmark = pytest.mark.usefixtures("backend")  # each test runs on disk and on Redis


MODEL = "openai/text-embedding-3-small"  # litellm knows its price
DEFAULT_DIMS = 16  # what the loopback server returns when no `dimensions` is asked


def texts(n: int, prefix: str = "text") -> list[str]:
    return [f"{prefix} number {i}" for i in range(n)]


def expected(text: str, dims: int = DEFAULT_DIMS) -> np.ndarray:
    return np.array(embedding_for(text, dims), dtype=np.float32)


def sent(llm) -> list[list[str]]:
    """The inputs of every embedding request the server received, in order."""
    return [request.inputs for request in llm.embedding_requests]


def embeddings_dir() -> Path:
    return Path(settings().cache) / "embeddings"


def test_only_new_texts_are_sent_and_results_keep_input_order(llm):
    first = texts(10)
    result = embed(first, model=MODEL)
    assert sent(llm) == [first]
    assert (result.fresh_count, result.cached_count) == (10, 0)
    assert result.total_cost is not None and result.total_cost > 0

    new = texts(5, prefix="new")
    mixed = [first[0], new[0], first[1], new[1], new[2], *first[2:], new[3], new[4]]
    result = embed(mixed, model=MODEL)

    assert sent(llm)[1:] == [new]
    assert [item.text for item in result] == mixed
    assert [item.cached for item in result] == [text not in new for text in mixed]
    assert (result.fresh_count, result.cached_count) == (5, 10)
    np.testing.assert_array_equal(result.to_numpy(), np.stack([expected(t) for t in mixed]))


def test_misses_go_in_batches_of_the_batch_size(llm, monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_EMBEDDING_BATCH_SIZE", "100")
    many = texts(250)
    result = embed(many, model=MODEL)

    batches = sent(llm)
    assert sorted(len(batch) for batch in batches) == [50, 100, 100]
    assert sorted(text for batch in batches for text in batch) == sorted(many)
    assert [item.text for item in result] == many and result.fresh_count == 250


def test_batches_share_the_global_concurrency_limit(llm, monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_EMBEDDING_BATCH_SIZE", "5")
    monkeypatch.setenv("KURA_MAGIC_MAX_CONCURRENCY", "2")
    llm.latency_s = 0.1
    embed(texts(30), model=MODEL)
    assert len(llm.embedding_requests) == 6
    assert llm.peak_in_flight <= 2


def test_a_repeated_text_is_sent_once_and_fills_both_places(llm):
    result = embed(["same", "other", "same"], model=MODEL)
    assert sent(llm) == [["same", "other"]]
    np.testing.assert_array_equal(result[0].vector, result[2].vector)
    np.testing.assert_array_equal(result[0].vector, expected("same"))
    assert [item.cached for item in result] == [False, False, True]


def test_changed_dimensions_or_model_are_misses(llm):
    embed(["hello"], model=MODEL, dimensions=8)
    embed(["hello"], model=MODEL, dimensions=8)
    assert len(llm.embedding_requests) == 1

    wider = embed(["hello"], model=MODEL, dimensions=12)
    other = embed(["hello"], model="openai/text-embedding-3-large", dimensions=8)
    assert len(llm.embedding_requests) == 3
    assert [r.body.get("dimensions") for r in llm.embedding_requests] == [8, 12, 8]
    assert wider.to_numpy().shape == (1, 12) and not other[0].cached
    assert embedding_key("hello", model=MODEL, dimensions=8) != embedding_key("hello", model=MODEL)


@pytest.mark.disk_only
@pytest.mark.parametrize("location", ["directory", "memory://"])
def test_the_store_stays_under_its_size_limit(llm, monkeypatch, location):
    if location == "memory://":
        monkeypatch.setenv("KURA_MAGIC_CACHE", "memory://")
    limit = 256 * 1024
    monkeypatch.setenv("KURA_MAGIC_EMBEDDING_SIZE_LIMIT", str(limit))
    monkeypatch.setenv("KURA_MAGIC_EMBEDDING_BATCH_SIZE", "1000")  # one batch: written in order
    dims = 256  # 1 KiB a vector: 600 of them write past the limit
    embed(texts(600), model=MODEL, dimensions=dims)

    info = embedding_cache_info()
    assert info.bytes <= limit
    assert 0 < info.entries < 600 and info.entries * 4 * dims <= limit
    # the least recently used went first: the last texts written are still there
    assert embed(texts(600)[-10:], model=MODEL, dimensions=dims).cached_count == 10
    assert len(llm.embedding_requests) == 1


def test_offline_miss_raises_and_sends_nothing(llm, monkeypatch):
    embed(["known"], model=MODEL)
    monkeypatch.setenv("KURA_MAGIC_OFFLINE", "1")
    assert embed(["known"], model=MODEL)[0].cached

    with pytest.raises(CacheMissError, match="2 texts"):
        embed(["known", "new one", "new two"], model=MODEL)
    assert len(llm.embedding_requests) == 1


@pytest.mark.disk_only
def test_vectors_are_stored_as_float32_bytes_never_pickle(llm):
    result = embed(["alpha", "beta"], model=MODEL, dimensions=8)
    with diskcache.Cache(str(embeddings_dir())) as raw:
        keys = list(raw)
        assert len(keys) == 2
        for item in result:
            stored = raw.get(f"embeddings::{embedding_key(item.text, model=MODEL, dimensions=8)}")
            assert type(stored) is bytes and len(stored) == 8 + 4 * 8, "a header, then 8 float32"
            np.testing.assert_array_equal(np.frombuffer(stored, dtype="<f4", offset=8), item.vector)
    with sqlite3.connect(embeddings_dir() / "cache.db") as db:
        modes = {mode for (mode,) in db.execute("SELECT mode FROM Cache")}
    assert modes == {diskcache.core.MODE_RAW}
    for path in embeddings_dir().rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(f"\x80{p}\x95".encode("latin-1") in data for p in "\x04\x05")



@pytest.mark.disk_only
def test_an_embedding_cache_from_the_indexed_layout_is_reused_without_a_request(llm):
    """Embedding stores were once written with diskcache's tag index; they still serve."""
    first = embed(["alpha", "beta"], model=MODEL, dimensions=8)
    store.close_all()
    with diskcache.Cache(str(embeddings_dir()), tag_index=True):  # the earlier layout
        pass
    again = embed(["alpha", "beta", "gamma"], model=MODEL, dimensions=8)
    assert [item.cached for item in again] == [True, True, False]
    np.testing.assert_array_equal(again.to_numpy()[:2], first.to_numpy())
    assert len(llm.embedding_requests) == 2
    with sqlite3.connect(embeddings_dir() / "cache.db") as db:  # now without it: faster writes
        indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "Cache_tag_rowid" not in indexes
    assert embedding_cache_info().entries == 3 and clear_embedding_cache() == 3

def test_works_inside_a_running_event_loop(llm):
    async def cell() -> Embeddings:
        return embed(["in a loop"], model=MODEL)

    result = asyncio.run(cell())
    np.testing.assert_array_equal(result[0].vector, expected("in a loop"))


def test_aembed_is_awaitable(llm):
    result = asyncio.run(aembed(["awaited"], model=MODEL))
    assert result.fresh_count == 1 and len(llm.embedding_requests) == 1


def test_rate_limit_is_retried_honouring_retry_after_and_never_cached(llm, monkeypatch):
    waits: list[float | None] = []
    real_delay = gateway.backoff_delay

    def spy(attempt: int, *, base_s: float, retry_after_s: float | None) -> float:
        waits.append(retry_after_s)
        return real_delay(attempt, base_s=base_s, retry_after_s=retry_after_s)

    monkeypatch.setattr(gateway, "backoff_delay", spy)
    # three 429s: litellm's OpenAI embedding client retries up to twice by itself
    # (it reads max_retries=0 as "default"), so at least one reaches our retry loop.
    llm.fail_next(3, status=429, retry_after_s=0.05)
    result = embed(["a", "b"], model=MODEL)

    assert len(llm.embedding_requests) == 4 and sent(llm)[-1] == ["a", "b"]
    assert waits and all(wait == pytest.approx(0.05) for wait in waits)
    assert result.fresh_count == 2 and embedding_cache_info().entries == 2
    assert embed(["a", "b"], model=MODEL).cached_count == 2
    assert len(llm.embedding_requests) == 4


def test_a_rejected_key_raises_and_caches_nothing(llm):
    llm.fail_next(1, status=401)
    with pytest.raises(AuthenticationError):
        embed(["a"], model=MODEL)
    assert embedding_cache_info().entries == 0


def test_a_refused_batch_raises_response_error(llm):
    with pytest.raises(ResponseError) as raised:
        embed(["fine", "[[refuse]] this"], model=MODEL)
    assert raised.value.error_type == "content_policy" and not raised.value.cached
    assert embedding_cache_info().entries == 0


def damage(texts: list[str], how, *, dimensions: int | None = None) -> None:
    """Overwrite the stored vectors of `texts` with `how(stored bytes)`."""
    backend = open_embedding_store().backend
    for text in texts:
        key = embedding_key(text, model=MODEL, dimensions=dimensions)
        backend.write_bytes(key, how(backend.read_bytes(key, experiment="embeddings")), experiment="embeddings")


@pytest.mark.parametrize("how", [
    lambda data: b"",
    lambda data: data[:8],  # the header alone: an empty vector
    lambda data: data[: len(data) // 2],  # every damaged one cut to the same length
    lambda data: data[:-4],  # one value short
    lambda data: data[8:],  # the values without their header (an older layout)
    lambda data: b"\x00\x01\x02",
], ids=["empty", "header-only", "halved", "one-short", "headerless", "junk"])
@pytest.mark.parametrize("dimensions", [None, 8], ids=["model-dims", "asked-dims"])
def test_a_damaged_vector_is_a_miss_and_exactly_the_damaged_ones_are_fetched(llm, how, dimensions):
    words = texts(5)
    embed(words, model=MODEL, dimensions=dimensions)
    damage(words[:3], how, dimensions=dimensions)  # most of them: their length is the commonest

    with pytest.warns(CacheWarning, match="3 cached embeddings had the wrong length") as warned:
        result = embed(words, model=MODEL, dimensions=dimensions)

    assert len([w for w in warned if w.category is CacheWarning]) == 1, "one warning for the batch"
    assert sent(llm)[-1] == words[:3], "exactly the damaged ones were sent again"
    assert [item.cached for item in result] == [False, False, False, True, True]
    np.testing.assert_array_equal(result[1].vector, expected(words[1], dimensions or DEFAULT_DIMS))
    assert embed(words, model=MODEL, dimensions=dimensions).cached_count == 5, "and they were replaced"
    assert len(llm.embedding_requests) == 2


def test_caching_off_stores_nothing(llm, monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_CACHE", "off")
    embed(["x"], model=MODEL)
    assert not embed(["x"], model=MODEL)[0].cached
    assert len(llm.embedding_requests) == 2 and embedding_cache_info().entries == 0


def test_memory_store_caches_like_the_disk(llm, monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_CACHE", "memory://")
    embed(["x"], model=MODEL)
    assert embed(["x"], model=MODEL)[0].cached and len(llm.embedding_requests) == 1


def test_the_store_is_shared_across_experiments(llm, monkeypatch):
    embed(["shared"], model=MODEL)
    monkeypatch.setenv("KURA_MAGIC_EXPERIMENT", "another")
    assert embed(["shared"], model=MODEL)[0].cached


def test_info_and_clear(llm):
    embed(texts(3), model=MODEL)
    assert embedding_cache_info().entries == 3 and embedding_cache_info().bytes > 0
    assert clear_embedding_cache() == 3
    assert embedding_cache_info().entries == 0
    assert embed(texts(3), model=MODEL).fresh_count == 3


def test_costs_are_zero_when_cached_and_unknown_without_a_price(llm):
    embed(["p"], model=MODEL)
    assert embed(["p"], model=MODEL).total_cost == 0.0
    unpriced = embed(["p"], model=UNPRICED_MODEL)
    assert unpriced.total_cost is None and "unknown" in repr(unpriced)


def test_empty_input_sends_nothing(llm):
    result = embed([], model=MODEL, dimensions=4)
    assert len(result) == 0 and result.to_numpy().shape == (0, 4)
    assert llm.request_count == 0


@pytest.mark.parametrize("bad", ["one string", ["ok", ""], ["ok", 3]])
def test_bad_input_is_a_data_error(bad):
    with pytest.raises(DataError):
        embed(bad, model=MODEL)


@pytest.mark.parametrize("dimensions", [0, "256", 2.5])
def test_bad_dimensions_are_a_data_error(dimensions):
    with pytest.raises(DataError, match="dimensions"):
        embed(["ok"], model=MODEL, dimensions=dimensions)


def test_cache_modes_choose_whether_the_store_is_read_and_written(llm):
    embed(["a", "b"], model=MODEL)

    only_read = embed(["a", "c"], model=MODEL, cache_mode="read_only")
    refreshed = embed(["a"], model=MODEL, cache_mode="refresh")
    uncached = embed(["b"], model=MODEL, cache_mode="off")
    after = embed(["a", "b", "c"], model=MODEL)

    assert sent(llm) == [["a", "b"], ["c"], ["a"], ["b"], ["c"]]
    assert [e.cached for e in only_read] == [True, False]
    assert [e.cached for e in refreshed] == [False]
    assert [e.cached for e in uncached] == [False]
    assert [e.cached for e in after] == [True, True, False], "read_only stored nothing"
    np.testing.assert_array_equal(uncached.to_numpy(), np.stack([expected("b")]))


def test_an_unknown_cache_mode_names_the_choices():
    with pytest.raises(ConfigError, match="cache_mode 'sometimes' is not one of read_write"):
        embed(["a"], model=MODEL, cache_mode="sometimes")  # type: ignore[arg-type]


def test_a_lone_surrogate_names_the_text_before_any_request(llm):
    with pytest.raises(DataError, match=r"text 1 contains a lone surrogate \(\\ud83d\) at"):
        embed(["ok", "cut\ud83d"], model=MODEL)
    assert llm.request_count == 0


def test_identical_texts_in_flight_in_one_process_are_sent_once(llm):
    llm.latency_s = 0.3

    async def both():
        return await asyncio.gather(aembed(texts(6), model=MODEL), aembed(texts(9), model=MODEL))

    first, second = asyncio.run(both())

    assert sorted(text for batch in sent(llm) for text in batch) == sorted(texts(9)), "each text sent once"
    assert first.fresh_count + second.fresh_count == 9 and first.cached_count + second.cached_count == 6
    np.testing.assert_array_equal(first.to_numpy(), second.to_numpy()[:6])


def test_two_processes_embedding_the_same_texts_send_each_once(llm, tmp_path, monkeypatch):
    """Two kernels on one disk cache (and, parametrised, two machines on one Redis)."""
    monkeypatch.setenv("KURA_MAGIC_EMBEDDING_BATCH_SIZE", "10")
    llm.latency_s = 0.2

    results = race_two_processes(tmp_path, count=90, racer=EMBEDDING_RACER,
                                 mine='rows[:60] if name == "a" else rows[:30] + rows[60:]')

    assert sum(len(batch) for batch in sent(llm)) == 90, "30 shared texts, each sent by one process only"
    assert sum(fresh for fresh, _, _ in results) == 90 and sum(cached for _, cached, _ in results) == 30


def test_the_first_embedding_in_a_new_process_loads_litellm_off_the_loop(llm):
    script = f"""
import asyncio, json, time
import kura_magic as km

async def main():
    gaps, last = [], time.perf_counter()
    async def tick():
        nonlocal last
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
    ticker = asyncio.ensure_future(tick())
    started = time.perf_counter()
    await km.aembed(["hello"], model={MODEL!r})
    ticker.cancel()
    return [max(gaps), time.perf_counter() - started]

print(json.dumps(asyncio.run(main())))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    longest_stall, took = json.loads(done.stdout.splitlines()[-1])
    # Loading litellm is most of the call's time: on the loop, one stall would be nearly all of it.
    # Relative, so a loaded machine (slower import, longer GIL waits) does not decide the test.
    assert longest_stall < 0.25 * took, f"the loop stalled {longest_stall:.2f} s of {took:.2f} s while litellm loaded"
    assert len(llm.embedding_requests) == 1
