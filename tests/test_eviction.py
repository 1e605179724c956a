"""Least-recently-used eviction on disk, to within a refresh period: a hit marks its entry
used only if it was last used longer ago than the period, so a re-run of recently used
entries writes nothing."""

from __future__ import annotations

import sqlite3
import time
import warnings

import pytest

from kura_magic.errors import CacheWarning
from kura_magic.storage import disk
from kura_magic.storage.disk import DiskStore

VALUE = 100_000  # bytes: stored in a file of its own, so the store's volume grows by exactly this
GROUP = 10  # diskcache evicts ten entries at a time
PERIOD_S = 100.0


class Clock:
    """The time diskcache and the store see, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    now = Clock(1_000_000.0)
    monkeypatch.setattr(time, "time", now)
    return now


def names(group: str) -> list[str]:
    return [f"{group}{i}" for i in range(GROUP)]


def write(store: DiskStore, group: str) -> None:
    store.write_many({key: b"x" * VALUE for key in names(group)}, experiment="e")


def survivors(store: DiskStore) -> set[str]:
    return {key[0] for key in store.keys(experiment="e")}


def test_a_hit_within_the_period_does_not_refresh_and_one_after_it_does(tmp_path, clock):
    store = DiskStore(tmp_path, size_limit=2 * GROUP * VALUE + 60_000, refresh_s=PERIOD_S)  # two groups fit
    write(store, "A")
    clock.now += 1
    write(store, "B")
    clock.now += 50  # within A's period: reading A is not a use worth a write
    assert len(store.read_many(names("A"), experiment="e")) == GROUP
    clock.now += 9
    write(store, "C")  # past the limit: the least recently used group goes, A (B was stored after it)
    assert survivors(store) == {"B", "C"}

    clock.now += 3 * PERIOD_S  # a later period: reading B marks it used now
    assert len(store.read_many(names("B"), experiment="e")) == GROUP
    clock.now += 10
    write(store, "D")  # C, stored after B but used before B's refresh, goes
    assert survivors(store) == {"B", "D"}


def test_peeking_never_counts_as_a_use(tmp_path, clock):
    store = DiskStore(tmp_path, size_limit=2 * GROUP * VALUE + 60_000, refresh_s=PERIOD_S)
    write(store, "A")
    clock.now += 1
    write(store, "B")
    clock.now += 3 * PERIOD_S
    assert len(store.peek_many(names("A"), experiment="e")) == GROUP
    write(store, "C")
    assert survivors(store) == {"B", "C"}


def test_a_rerun_of_recently_used_entries_reads_while_another_process_holds_the_write_lock(tmp_path):
    store = DiskStore(tmp_path, refresh_s=3600)
    store.write_many({f"k{i}": b'{"model": "m"}' for i in range(50)}, experiment="e")
    writer = sqlite3.connect(tmp_path / "cache.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a lock wait would end in a CacheWarning
            found = store.read_many([f"k{i}" for i in range(50)], experiment="e")
        assert len(found) == 50
        assert time.perf_counter() - started < 1.0  # it did not wait for the lock
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_an_access_time_update_that_cannot_be_written_loses_no_hit(tmp_path, clock, monkeypatch):
    monkeypatch.setattr(disk, "STORAGE_TIMEOUT_S", 0.05)
    store = DiskStore(tmp_path, refresh_s=PERIOD_S)
    store.write_many({f"k{i}": b'{"model": "m"}' for i in range(5)}, experiment="e")
    clock.now += 2 * PERIOD_S  # every entry is due an update
    writer = sqlite3.connect(tmp_path / "cache.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        with pytest.warns(CacheWarning, match="access-time update"):
            found = store.read_many([f"k{i}" for i in range(5)], experiment="e")
        assert len(found) == 5
    finally:
        writer.execute("ROLLBACK")
        writer.close()
