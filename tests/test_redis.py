"""What only the Redis store has to show, against a real redis-server: what it holds, one
round trip for a run's hits, its password never shown, a bad URL or password refused before
anything is spent, Redis down or killed mid-run survived, a key prefix, an entry TTL, TLS.
(The behaviour it shares with the disk store runs against both in the other modules.)"""

from __future__ import annotations

import json
import pickle
import time
from collections import Counter
from pathlib import Path

import pytest
import redis as redis_py

import kura_magic as km
from helpers import API_KEY, EMBEDDING_MODEL, PROMPT, make_conversations, requires_redis
from kura_magic.testing import RedisServer

pytestmark = requires_redis


def raw_client(url: str) -> redis_py.Redis:
    return redis_py.Redis.from_url(url)


def our_keys(client: redis_py.Redis) -> list[bytes]:
    return sorted(client.scan_iter(match=f"{km.config.settings().redis_prefix}:*"))


class Planted:
    """A pickle that would leave a file behind if anything ever unpickled it."""

    marker: Path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_a_corrupt_or_pickled_value_is_a_miss_and_is_never_unpickled(llm, redis_cache, tmp_path):
    conversations = make_conversations(2)
    km.summarise(conversations, PROMPT)
    client = raw_client(redis_cache)
    entries = [key for key in our_keys(client) if b":r:" in key]
    planted = Planted()
    planted.marker = tmp_path / "unpickled"
    client.set(entries[0], pickle.dumps(planted))
    client.set(entries[1], b"{not json")

    with pytest.warns(km.CacheWarning, match="unreadable"):
        run = km.summarise(conversations, PROMPT)

    assert run.stats.fresh == 2 and llm.request_count == 4, "both were misses"
    assert not planted.marker.exists(), "the pickle was never loaded"
    assert km.summarise(conversations, PROMPT).stats.cached == 2, "and both were replaced"


def test_redis_holds_json_and_float32_bytes_and_never_the_api_key(llm, redis_cache):
    km.summarise(make_conversations(3), PROMPT)
    km.embed(["alpha", "beta"], model=EMBEDDING_MODEL, dimensions=8)
    client = raw_client(redis_cache)

    values = {key: client.get(key) for key in our_keys(client)}
    scopes = Counter(key.split(b":")[1] for key in values)

    assert (scopes[b"r"], scopes[b"v"]) == (3, 2), "three answers, two vectors (and the run history)"
    assert all(API_KEY.encode() not in key + value for key, value in values.items())
    for key, value in values.items():
        if b":v:" in key:
            assert len(value) == 8 + 8 * 4, "a vector is its length, then 8 little-endian float32s"
        elif b":r:" in key:
            km.types.CacheEntry.model_validate_json(value)
        else:
            json.loads(value)


def test_a_runs_hits_come_back_in_one_round_trip(llm, redis_cache):
    conversations = make_conversations(120)
    km.summarise(conversations, PROMPT)
    client = raw_client(redis_cache)
    client.config_set("slowlog-log-slower-than", 0)  # log every command, with its first keys
    client.config_set("slowlog-max-len", 10_000)
    client.slowlog_reset()

    run = km.summarise(conversations, PROMPT)

    answers = f"{km.config.settings().redis_prefix}:r:".encode()
    reads = [entry["command"] for entry in client.slowlog_get(10_000) if answers in entry["command"]]
    client.config_set("slowlog-log-slower-than", 10_000)
    assert run.stats.cached == 120
    assert [command.split()[0] for command in reads] == [b"MGET"], "one round trip read every hit"


def test_the_password_is_shown_nowhere(llm, monkeypatch, shell):
    with RedisServer(password="hunter2-team-secret") as server:
        monkeypatch.setenv("KURA_MAGIC_CACHE", server.url)
        km.summarise(make_conversations(2), PROMPT)
        shell.run_line_magic("config", "KuraMagics.panel = 'text'")

        shown = [
            km.cache_info().url, repr(km.config.settings()), str(shell.run_line_magic("kura", "config")),
            repr(shell.run_line_magic("kura", "")), repr(km.cache_info()),
        ]

    assert "hunter2-team-secret" in server.url
    assert all("hunter2-team-secret" not in text for text in shown)
    assert shown[0] == f"redis://:***@127.0.0.1:{server.port}/0"


def test_a_tls_redis_caches_like_any_other(llm, monkeypatch, shell):
    with RedisServer(tls=True, password="tls-team-secret") as server:
        monkeypatch.setenv("KURA_MAGIC_CACHE", server.url)
        first = km.summarise(make_conversations(3), PROMPT)
        km.storage.close_all()  # a new connection, as another kernel of the team would open
        again = km.summarise(make_conversations(3), PROMPT)
        stored = our_keys(raw_client(server.url))
        shown = str(shell.run_line_magic("kura", "config")) + repr(km.cache_info())

    assert (first.stats.fresh, again.stats.cached) == (3, 3)
    assert llm.request_count == 3
    assert stored, "the answers are in the TLS Redis"
    assert "tls-team-secret" not in shown and "rediss://:***@" in shown


def test_a_tls_redis_whose_certificate_is_not_trusted_is_warned_about_and_runs_go_on(llm, monkeypatch):
    with RedisServer(tls=True) as server:
        untrusted = server.url.split("?", 1)[0]  # no ssl_ca_certs: the self-made certificate is unknown
        monkeypatch.setenv("KURA_MAGIC_CACHE", untrusted)
        with pytest.warns(km.CacheWarning, match="certificate verify failed"):
            run = km.summarise(make_conversations(2), PROMPT)

    assert run.stats.fresh == 2 and [result.status for result in run.results] == ["ok", "ok"]
    assert llm.request_count == 2


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://:wrong-password@127.0.0.1:{port}/0", "refused the connection"),
        ("redis://127.0.0.1:not-a-port/0", "is not a Redis URL"),
    ],
    ids=["wrong-password", "bad-url"],
)
def test_a_bad_url_or_password_is_one_clear_error_before_anything_is_spent(llm, monkeypatch, url, message):
    with RedisServer(password="the-right-one") as server:
        monkeypatch.setenv("KURA_MAGIC_CACHE", url.format(port=server.port))

        with pytest.raises(km.CacheError, match=message) as raised:
            km.summarise(make_conversations(2), PROMPT)

    assert "wrong-password" not in str(raised.value)
    assert llm.request_count == 0


def test_a_redis_that_is_down_is_one_warning_and_a_run_without_the_cache(llm, monkeypatch, shell):
    server = RedisServer().start()
    server.kill()
    monkeypatch.setenv("KURA_MAGIC_CACHE", server.url)
    shell.run_line_magic("config", "KuraMagics.panel = 'text'")
    shell.user_ns["convs"] = make_conversations(6)

    with pytest.warns(km.CacheWarning, match="cannot be reached") as warned:
        run = shell.run_cell_magic("summarise", "convs", PROMPT)

    assert len([w for w in warned if "cannot be reached" in str(w.message)]) == 1
    assert (run.stats.fresh, run.stats.errors, run.stats.unsaved) == (6, 0, 6)
    assert "6 not stored (cache unavailable)" in run.stats.summary_line()


def test_the_prefix_keeps_other_data_and_other_prefixes_whole(llm, redis_cache, monkeypatch):
    client = raw_client(redis_cache)
    client.set("someone-else:user:42", b"keep me")
    ours = km.config.settings().redis_prefix
    km.summarise(make_conversations(2), PROMPT)
    monkeypatch.setenv("KURA_MAGIC_REDIS_PREFIX", f"{ours}-other-team")
    km.summarise(make_conversations(3), PROMPT)

    assert km.clear_all_caches() == 3, "the other team clears only its own"
    assert client.get("someone-else:user:42") == b"keep me"
    monkeypatch.setenv("KURA_MAGIC_REDIS_PREFIX", ours)
    assert km.cache_info().entries == 2


def test_entries_expire_after_the_ttl(llm, redis_cache, monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_CACHE_TTL", "1")
    conversations = make_conversations(2)
    km.summarise(conversations, PROMPT)
    assert km.summarise(conversations, PROMPT).stats.cached == 2

    time.sleep(1.3)

    assert km.summarise(conversations, PROMPT).stats.fresh == 2
    assert llm.request_count == 4


def test_kura_stats_and_clear_per_experiment_work_on_redis(llm, redis_cache, shell):
    shell.user_ns["convs"] = make_conversations(3)
    shell.run_cell_magic("summarise", "convs", PROMPT)
    shell.run_cell_magic("summarise", "convs --limit 2 --experiment other", PROMPT)

    stats = shell.run_line_magic("kura", "stats").set_index("experiment")
    assert (stats.loc["default", "entries"], stats.loc["other", "entries"]) == (3, 2)
    assert shell.run_line_magic("kura", "clear --experiment other") == "cleared 2 entries of experiment 'other'"
    assert set(km.cache_info().experiments) == {"default"}
