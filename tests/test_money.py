"""Honest money: a model priced at $0 says $0 (not "at least $0"), an estimate prices
replies at `max_tokens` or at the length of the replies already cached and says which, and
a budget counts on what this run's calls really cost."""

from __future__ import annotations

import kura_magic as km
import pytest
from helpers import MODEL, PROMPT, UNPRICED_MODEL, make_conversations

OTHER_PROMPT = "Summarise this support chat in one short line:\n{{ transcript }}"


def test_a_model_priced_at_zero_costs_zero_not_at_least_zero(llm):
    km.configure(model_prices={UNPRICED_MODEL: (0.0, 0.0)})

    run = km.summarise(make_conversations(3), PROMPT, model=UNPRICED_MODEL)

    assert llm.request_count == 3
    assert run.stats.cost == 0.0 and run.stats.cost_unknown == 0
    assert [r.cost for r in run] == [0.0, 0.0, 0.0]
    assert "$0.00" in repr(run) and "≥" not in repr(run)
    assert km.estimate(make_conversations(2, prefix="n", text="new"), PROMPT,
                       model=UNPRICED_MODEL).estimated_cost == 0.0


def test_a_model_with_no_price_still_says_at_least(llm):
    run = km.summarise(make_conversations(2), PROMPT, model=UNPRICED_MODEL)

    assert run.stats.cost_unknown == 2 and "no price known" in repr(run)


def test_an_estimate_prices_replies_at_the_cached_mean_and_says_so(llm):
    km.summarise(make_conversations(6), PROMPT)
    fresh = make_conversations(6, prefix="n")

    estimate = km.estimate(fresh, OTHER_PROMPT)
    run = km.summarise(fresh, OTHER_PROMPT)

    assert estimate.fresh == 6 and "mean of 6 cached replies" in str(estimate)
    assert estimate.estimated_cost == pytest.approx(run.stats.cost, rel=0.25), "close to what it then cost"


def test_an_estimate_prices_replies_at_max_tokens_when_set(llm):
    km.summarise(make_conversations(4), PROMPT)
    fresh = make_conversations(4, prefix="n")

    at_mean = km.estimate(fresh, OTHER_PROMPT).estimated_cost
    at_cap = km.estimate(fresh, OTHER_PROMPT, max_tokens=300)

    assert "replies at max_tokens=300" in str(at_cap)
    assert at_cap.estimated_cost > 5 * at_mean


def test_an_estimate_with_nothing_cached_says_it_guessed(llm):
    estimate = km.estimate(make_conversations(2), PROMPT)
    assert f"guessed at 200 tokens: nothing cached for {MODEL}" in str(estimate)


def test_a_budget_counts_on_what_this_runs_calls_cost(llm):
    """Ten calls' worth of budget buys about ten calls, and the skip message's price per call
    is what the calls really cost (a 200-token guess would have stopped after one)."""
    sample = km.summarise(make_conversations(1, text="help me with my order"), PROMPT)
    one_call = sample.stats.cost
    llm.reset()

    run = km.summarise(make_conversations(30), PROMPT, max_cost=one_call * 10.5, max_concurrency=1)

    assert 9 <= llm.request_count <= 11, "about ten calls were made"
    assert run.stats.skipped == 30 - run.stats.fresh and run.stats.cost <= one_call * 10.5
    assert run.stats.skip_estimate == pytest.approx(one_call, rel=0.25)


def test_prices_can_be_set_from_the_environment_as_a_kernel_would_be(llm, monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_MODEL_PRICES", f'{{"{UNPRICED_MODEL}": [0, 0]}}')

    run = km.summarise(make_conversations(2), PROMPT, model=UNPRICED_MODEL)

    assert run.stats.cost == 0.0 and run.stats.cost_unknown == 0


def test_prices_that_are_not_json_name_the_variable(monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_MODEL_PRICES", "openai/x=0")
    with pytest.raises(km.ConfigError, match="KURA_MAGIC_MODEL_PRICES.*give JSON"):
        km.summarise(make_conversations(1), PROMPT)
