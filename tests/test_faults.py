"""Faults a careful attacker tries: secrets in provider errors, runs racing each other for
the same calls, processes sharing one cache, and a damaged cache file."""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
import warnings
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import kura_magic as km
from kura_magic.calls import calls
from kura_magic import storage as store
from kura_magic.storage.disk import DiskStore
from kura_magic.storage.responses import ResponseStore
from helpers import EMBEDDING_MODEL, PROMPT, make_conversations, race_two_processes, requires_redis, requires_s3
from kura_magic.testing import RedisServer
from kura_magic.testing.seaweed import SeaweedFS

SECRET = "sk-live-do-not-leak-0123456789"
CALLS = {
    "summarise": lambda: km.summarise(make_conversations(1), PROMPT),
    "complete": lambda: km.complete("hello"),
    "embed": lambda: km.embed(["hello"], model=EMBEDDING_MODEL),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_a_key_the_provider_echoes_is_in_no_part_of_the_error_or_its_traceback(llm, monkeypatch, call):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    llm.fail_next(1, status=401)

    with pytest.raises(km.errors.AuthenticationError) as raised:
        call()

    shown = "".join(traceback.format_exception(raised.value))
    assert "Incorrect API key provided" in shown, "the provider's reason is kept"
    assert SECRET not in shown
    assert raised.value.__cause__ is None and raised.value.__context__ is None


def test_overlapping_runs_on_one_loop_pay_once_for_each_call(llm):
    llm.latency_s = 0.05
    conversations = make_conversations(8)

    async def both() -> list[km.SummaryRun]:
        return await asyncio.gather(
            km.asummarise(conversations, PROMPT, max_concurrency=2),
            km.asummarise(list(reversed(conversations)), PROMPT, max_concurrency=2),
        )

    forward, backward = asyncio.run(both())

    assert llm.request_count == 8, "a call another run cached while this one waited is not made again"
    assert forward.stats.fresh + backward.stats.fresh == 8
    assert [r.summary for r in forward] == [r.summary for r in reversed(backward.results)]


def test_two_processes_on_one_cache_make_each_shared_call_once(llm, tmp_path, backend):
    """On disk: two kernels on one machine. On Redis: two machines that share only its URL."""
    llm.latency_s = 0.2
    results = race_two_processes(tmp_path, count=90, mine='rows[:60] if name == "a" else rows[:30] + rows[60:]')

    assert llm.request_count == 90, "30 shared calls, each made by one process only"
    assert sum(fresh for fresh, _, _ in results) == 90
    assert [errors for _, _, errors in results] == [0, 0]


def claimed_elsewhere(llm, conversations: list[dict], *, ttl_s: float) -> tuple[store.Store, str]:
    """The store and the key of the conversations' call, claimed by "another process"
    (the answer is made once in a probe experiment, so it can be planted later)."""
    key = km.summarise(conversations, PROMPT, experiment="probe")[0].key
    llm.reset()
    shared = store.open_store(km.config.settings())
    assert shared.claim(key, experiment="default", token="another process", ttl_s=ttl_s)
    return shared, key


def test_a_dead_owners_claim_lapses_and_the_waiting_run_makes_the_call(llm, backend):
    conversations = make_conversations(1)
    claimed_elsewhere(llm, conversations, ttl_s=0.6)

    started = time.monotonic()
    run = km.summarise(conversations, PROMPT)

    assert time.monotonic() - started >= 0.5, "it waited for the claim to lapse"
    assert (run.stats.fresh, llm.request_count) == (1, 1)


def test_a_waiting_run_takes_the_owners_answer_as_soon_as_it_is_stored(llm, backend):
    conversations = make_conversations(1)
    shared, key = claimed_elsewhere(llm, conversations, ttl_s=30)
    entry = ResponseStore(shared).get(key, experiment="probe")
    threading.Timer(0.3, ResponseStore(shared).set, (key, entry), {"experiment": "default"}).start()

    started = time.monotonic()
    run = km.summarise(conversations, PROMPT)

    assert time.monotonic() - started < 5, "it did not wait for the 30 s claim to lapse"
    assert (run.stats.cached, llm.request_count) == (1, 0)



def test_a_call_outlasting_its_lease_keeps_renewing_it_so_no_other_process_makes_it(
    llm, backend, monkeypatch
):
    conversations = make_conversations(1)
    key = km.summarise(conversations, PROMPT, experiment="probe")[0].key
    llm.reset()
    monkeypatch.setattr(calls, "LEASE_S", 0.3)  # renewed every 0.1 s
    llm.latency_s = 1.0
    shared = store.open_store(km.config.settings())
    taken = []

    def another_process_tries() -> None:
        while llm.request_count == 0:  # the call is out, under its lease
            time.sleep(0.01)
        time.sleep(0.5)  # longer than a lease lasts unless renewed
        taken.append(shared.claim(key, experiment="default", token="another process", ttl_s=5))

    other = threading.Thread(target=another_process_tries, daemon=True)
    other.start()
    run = km.summarise(conversations, PROMPT)
    other.join(timeout=10)

    assert taken == [False], "the owner's lease was still held"
    assert run.stats.fresh == 1

@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": float("nan")}, "temperature=nan"),
        ({"temperature": -0.5}, "temperature=-0.5"),
        ({"temperature": "warm"}, "temperature='warm'"),
        ({"params": {"top_p": float("inf")}}, "top_p=inf"),
        ({"max_tokens": 0}, "max_tokens=0"),
    ],
    ids=["nan-temperature", "negative-temperature", "text-temperature", "infinite-param", "no-tokens"],
)
def test_unusable_model_parameters_are_refused_before_any_call(llm, options, message):
    started = time.monotonic()

    with pytest.raises(km.ConfigError, match=message):
        km.summarise(make_conversations(2), PROMPT, **options)
    with pytest.raises(km.ConfigError, match=message):
        km.complete("hello", **options)

    assert llm.request_count == 0
    assert time.monotonic() - started < 2, "refused at once, not retried as if transient"


def damaged_cache_file(where: str) -> Path:
    """A cache written by an earlier session, then damaged where a crash or a bad disk would."""
    earlier = DiskStore(Path(km.config.settings().cache))
    for number in range(200):
        ResponseStore(earlier).set(f"km2-chat-{number}", km.types.CacheEntry(model="m", response="x" * 400), experiment="default")
    earlier.close()
    database = earlier.directory / "cache.db"
    with database.open("r+b") as file:
        file.seek(0 if where == "header" else database.stat().st_size // 2)
        file.write(b"\xde\xad" * 4096)
    return database


@pytest.mark.parametrize("where", ["header", "middle"])
def test_a_damaged_cache_file_warns_once_runs_go_on_and_clearing_all_recovers(llm, where):
    conversations = make_conversations(40)
    database = damaged_cache_file(where)

    with pytest.warns(km.CacheWarning, match=f"cache file {database} is damaged") as warned:
        run = km.summarise(conversations, PROMPT)
        info = km.cache_info()

    assert len(run) == 40 and run.stats.errors == 0, "nothing is lost"
    assert len([w for w in warned if "damaged" in str(w.message)]) == 1, "one warning, not forty"
    assert "clear --all" in info.problem
    km.clear_all_caches()
    assert list(database.parent.glob("cache.db.damaged-*")), "the damaged file is kept aside"
    assert km.cache_info().problem is None
    km.summarise(conversations, PROMPT)
    requests = llm.request_count
    assert km.summarise(conversations, PROMPT).stats.cached == 40
    assert llm.request_count == requests, "the new cache works"


def test_kura_clear_all_recovers_a_damaged_cache_and_stats_name_the_file(shell, llm):
    shell.user_ns["convs"] = make_conversations(3)
    database = damaged_cache_file("header")

    with pytest.warns(km.CacheWarning), pytest.raises(UsageError, match=f"{database} is damaged"):
        shell.run_line_magic("kura", "stats")
    assert "clear --all" in repr(shell.run_line_magic("kura", "")), "the panel says it too"
    assert shell.run_line_magic("kura", "clear --all").startswith("cleared 0 entries")

    assert shell.run_cell_magic("summarise", "convs", PROMPT).stats.fresh == 3
    assert km.cache_info().entries == 3


def test_a_run_whose_calls_all_fail_says_so_with_counts_that_add_up(llm, monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_MAX_RETRIES", "2")
    llm.fail_rate(1.0, status=500)

    run = km.summarise(make_conversations(3), PROMPT)
    texts = run.stats.texts()

    assert llm.request_count == 9, "three calls, each tried three times"
    assert (texts["kura-done"], texts["kura-fresh"], texts["kura-cached"]) == ("3/3 failed", "0 fresh", "0 cached")
    assert texts["kura-errors"] == "3 errors (not cached: run again to retry)"
    assert texts["kura-retries"] == "6 retries"
    assert all(r.error.startswith("server_error: The server had an error") for r in run)


def test_rate_limits_are_counted_live_and_in_the_runs_stats(llm):
    llm.fail_rate(0.3, status=429, retry_after_s=0.0)
    seen = []

    run = km.summarise(make_conversations(20), PROMPT, on_progress=lambda stats: seen.append(stats.rate_limited))

    limited = llm.request_count - 20
    assert limited > 0 and run.stats.errors == 0
    assert (run.stats.retries, run.stats.rate_limited) == (limited, limited)
    assert run.stats.texts()["kura-retries"] == f"{limited} {'retry' if limited == 1 else 'retries'} ({limited} rate-limited)"
    assert 0 < max(seen[:-1], default=0), "counted while the run went, not only at its end"


# A shared store started for one test (it is killed): how to start it, and the variables
# a user sets to use it.
THROWAWAY_STORES = {
    "redis": (RedisServer, lambda server: {"KURA_MAGIC_CACHE": server.url}),
    "s3": (SeaweedFS, lambda server: {**server.environment(), "KURA_MAGIC_CACHE": server.url("killed")}),
}


@pytest.mark.parametrize("kind", [pytest.param("redis", marks=requires_redis), pytest.param("s3", marks=requires_s3)])
def test_a_shared_store_killed_mid_run_the_run_completes_uncached_with_one_warning(llm, monkeypatch, kind):
    start, variables = THROWAWAY_STORES[kind]
    llm.latency_s = 0.02
    with start() as server:
        for variable, value in variables(server).items():
            monkeypatch.setenv(variable, value)

        def kill_after_five(stats: km.RunStats) -> None:
            if stats.done == 5 and server.running:
                server.kill()

        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            run = km.summarise(make_conversations(20), PROMPT, max_concurrency=1, on_progress=kill_after_five)

    assert len(run) == 20 and {r.status for r in run} == {"ok"}, "nothing returned is lost"
    assert llm.request_count == 20
    assert run.stats.unsaved == 15, "the five before the kill were stored, the rest not"
    unreachable = [w for w in warned if "cannot be reached" in str(w.message)]
    assert len(unreachable) == 1, [str(w.message) for w in warned]
