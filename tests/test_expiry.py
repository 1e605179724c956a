"""Entries that expire, on every store (disk, Redis, S3): an age limit from
`KURA_MAGIC_CACHE_TTL`, `%kura config cache_ttl=...` or `summarise(..., ttl=...)`; `prune()`
removing what expired and saying what it freed; `%kura clear --model` removing one model's
entries. Each test asserts what the store holds afterwards."""

from __future__ import annotations

import time

import pytest

import kura_magic as km
from kura_magic.run.session import clear_model
from helpers import MODEL, PROMPT, UNPRICED_MODEL, make_conversations

pytestmark = pytest.mark.usefixtures("backend")  # each test runs on disk, Redis and S3
TTL_S = 1.5


def held() -> dict[str, int]:
    """Entries the response store holds, per experiment (0s left out)."""
    return {name: info.entries for name, info in km.cache_info().experiments.items() if info.entries}


def test_entries_expire_and_prune_removes_them_and_says_what_it_freed(llm, backend, monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_CACHE_TTL", str(TTL_S))
    conversations = make_conversations(3)
    km.summarise(conversations, PROMPT)
    assert km.summarise(conversations, PROMPT).stats.cached == 3 and held() == {"default": 3}

    time.sleep(TTL_S + 0.3)
    freed = km.prune()

    if backend == "redis":
        assert freed == km.storage.Pruned(), "Redis forgot them by itself: nothing left to prune"
    else:
        assert freed.entries == 3 and freed.bytes > 3 * 100
    assert held() == {}, "the store holds none of them"
    assert km.runs()["repeats"].tolist() == [1], "the run history does not expire (the cached re-run is folded in)"
    assert km.summarise(conversations, PROMPT).stats.fresh == 3 and llm.request_count == 6


def test_a_runs_own_ttl_limits_its_answers_only(llm, backend):
    conversations = make_conversations(4)
    km.summarise(conversations[:2], PROMPT, ttl=TTL_S)
    km.summarise(conversations[2:], PROMPT)

    time.sleep(TTL_S + 0.3)
    freed = km.prune()

    assert freed.entries == (0 if backend == "redis" else 2)
    assert held() == {"default": 2}
    again = km.summarise(conversations, PROMPT)
    assert (again.stats.fresh, again.stats.cached) == (2, 2)


def test_prune_leaves_entries_without_an_age_limit_whole(llm, backend, shell):
    km.summarise(make_conversations(2), PROMPT)

    note = shell.run_line_magic("kura", "prune")

    assert str(note) == "pruned 0 expired entries, freeing 0 B"
    assert held() == {"default": 2}


def test_clear_model_removes_one_models_entries_in_every_experiment(llm, backend, shell):
    conversations = make_conversations(3)
    for experiment in ("default", "other"):
        km.summarise(conversations, PROMPT, model=MODEL, experiment=experiment)
        km.summarise(conversations[:2], PROMPT, model=UNPRICED_MODEL, experiment=experiment)
    assert held() == {"default": 5, "other": 5}

    note = shell.run_line_magic("kura", f"clear --model {UNPRICED_MODEL}")

    assert str(note) == f"cleared 4 entries of model {UNPRICED_MODEL!r} from every experiment"
    assert held() == {"default": 3, "other": 3}
    assert km.summarise(conversations, PROMPT, model=MODEL).stats.cached == 3


def test_clear_model_in_one_experiment_leaves_the_others_whole(llm, backend):
    conversations = make_conversations(2)
    for experiment in ("default", "other"):
        km.summarise(conversations, PROMPT, model=UNPRICED_MODEL, experiment=experiment)

    assert clear_model(UNPRICED_MODEL, "other") == 2
    assert held() == {"default": 2}


def test_cache_ttl_takes_days_hours_minutes_or_seconds(shell, monkeypatch, backend):
    if backend != "disk":
        pytest.skip("settings only: one store is enough")
    shell.run_line_magic("kura", "config cache_ttl=7d")
    assert km.config.settings().cache_ttl_s == 7 * 86400
    monkeypatch.setenv("KURA_MAGIC_CACHE_TTL", "12h")
    shell.run_line_magic("kura", "config cache_ttl=")
    assert km.config.settings().cache_ttl_s == 12 * 3600
    with pytest.raises(km.ConfigError, match="not a duration"):
        km.configure(cache_ttl="soon")
    with pytest.raises(km.ConfigError, match="ttl=-1"):
        km.summarise(make_conversations(1), PROMPT, ttl=-1)
