"""Embeddings seen from the rest of the library: a run's summaries, cache_info, clear_cache."""

from __future__ import annotations

import pytest

import kura_magic as km
from helpers import make_conversations

pytestmark = pytest.mark.usefixtures("backend")  # each test runs on disk and on Redis


EMBEDDING_MODEL = "openai/text-embedding-3-small"


def test_a_run_embeds_its_summaries_through_the_cache(llm):
    run = km.summarise(make_conversations(4), "Summarise:\n{{ transcript }}")

    first = run.embed(model=EMBEDDING_MODEL, dimensions=8)
    again = run.embed(model=EMBEDDING_MODEL, dimensions=8)

    assert [e.text for e in first] == [r.summary for r in run]
    assert first.to_numpy().shape == (4, 8)
    assert (first.fresh_count, again.cached_count) == (4, 4)
    assert len(llm.embedding_requests) == 1


def test_schema_runs_embed_the_summary_field(llm):
    run = km.summarise(make_conversations(2), "{{ transcript }}", schema="KuraSummary")
    vectors = run.embed(model=EMBEDDING_MODEL)
    assert [e.text for e in vectors] == [r.summary.summary for r in run]


def test_cache_info_has_an_embeddings_line_and_clear_cache_can_empty_it(llm):
    km.embed(["a", "b", "c"], model=EMBEDDING_MODEL)
    km.summarise(make_conversations(1), "{{ transcript }}")
    assert km.cache_info().embeddings.entries == 3

    assert km.run.embeddings.clear_embedding_cache() == 3
    info = km.cache_info()
    assert info.embeddings.entries == 0
    assert info.for_experiment("default").entries == 1, "chat entries are kept"


def test_clear_all_also_clears_embeddings(llm):
    km.embed(["a"], model=EMBEDDING_MODEL)
    km.summarise(make_conversations(1), "{{ transcript }}")
    assert km.clear_all_caches() == 2
    assert km.cache_info().entries == 0 and km.cache_info().embeddings.entries == 0
