"""Sweeps against the loopback server: prompts × models × parameter values, each its own run
through one cache; what the server received says what was paid for."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
from helpers import MODEL, UNPRICED_MODEL, make_conversations

import kura_magic as km
from kura_magic.errors import BudgetError, ConfigError
from kura_magic.run.scoring import judge_score

PROMPTS = {"short": "In five words:\n{{ transcript }}", "long": "Summarise in detail:\n{{ transcript }}"}
MODELS = [MODEL, "openai/gpt-4o"]
THIRD = "openai/gpt-4.1-mini"
TEMPERATURES = {"temperature": [0, 0.7]}


def sent(llm) -> Counter:
    """The chat calls the server received, counted by (model, temperature)."""
    return Counter((r.model, r.body.get("temperature")) for r in llm.chat_requests)


def test_a_2x2x2_sweep_runs_every_variant_and_one_more_model_sends_only_its_calls(llm):
    conversations = make_conversations(3)
    first = km.sweep(conversations, PROMPTS, models=MODELS, params=TEMPERATURES, name="matrix")

    assert len(first.runs) == 8 and len(llm.chat_requests) == 8 * 3
    assert list(first.runs)[:2] == ["short,gpt-4o-mini,t=0", "short,gpt-4o-mini,t=0.7"]
    assert set(sent(llm)) == {(m.removeprefix("openai/"), t) for m in MODELS for t in (0, 0.7)}
    assert all(run.stats.fresh == 3 for run in first.runs.values())

    llm.reset()
    again = km.sweep(conversations, PROMPTS, models=[*MODELS, THIRD], params=TEMPERATURES, name="matrix")

    assert len(again.runs) == 12
    assert {r.model for r in llm.chat_requests} == {"gpt-4.1-mini"} and len(llm.chat_requests) == 2 * 2 * 3
    board = again.leaderboard().set_index("variant")
    assert board.loc["short,gpt-4o,t=0.7", "cached"] == 3 and board.loc["short,gpt-4.1-mini,t=0", "fresh"] == 3


def test_the_variants_calls_go_out_together_not_one_variant_after_another(llm):
    llm.latency_s = 0.2
    km.sweep(make_conversations(2), PROMPTS, models=MODELS)
    assert llm.peak_in_flight >= 4  # 4 variants × 2 conversations: more than one variant's worth at once


def test_samples_3_then_5_pays_for_exactly_2_more_per_conversation_and_sample_0_is_the_plain_key(llm):
    conversations = make_conversations(4)
    plain = km.summarise(conversations, PROMPTS["short"], temperature=0.7)
    llm.reset()

    three = km.sweep(conversations, PROMPTS["short"], params={"temperature": [0.7]}, samples=3)
    assert len(llm.chat_requests) == 2 * 4, "sample 0 is the plain run's entries"
    assert [r.key for r in three.cells["prompt", 0].run] == [r.key for r in plain]
    assert len({r.key for cell in three.samples_of("prompt") for r in cell.run}) == 3 * 4

    llm.reset()
    five = km.sweep(conversations, PROMPTS["short"], params={"temperature": [0.7]}, samples=5)
    assert len(llm.chat_requests) == 2 * 4
    per_conversation = Counter(r.messages[-1]["content"] for r in llm.chat_requests)
    assert sorted(per_conversation.values()) == [2, 2, 2, 2]
    assert all("sample" not in r.body for r in llm.chat_requests), "the sample index is never sent"
    assert five.leaderboard()["agreement"].tolist() == [1.0]  # the loopback answers alike every time


def test_agreement_is_the_share_of_conversations_whose_samples_all_agree(llm):
    replies = iter(["a", "a", "b", "a", "a", "a"] * 2)
    llm.reply = lambda messages: next(replies)
    try:
        result = km.sweep(make_conversations(2), PROMPTS["short"], params={"temperature": [1]}, samples=3)
    finally:
        llm.reply = None
    outputs = result.to_pandas().groupby("conversation")["output"].nunique()
    assert result.leaderboard()["agreement"].iloc[0] == (outputs == 1).mean()


def test_a_plain_sweep_has_no_agreement_and_the_long_form_has_a_row_per_conversation_variant_and_sample(llm):
    result = km.sweep(make_conversations(3), PROMPTS, samples=2)
    frame = result.to_pandas()
    assert len(frame) == 3 * 2 * 2
    assert list(frame.columns) == ["conversation", "variant", "sample", "output", "cached", "cost", "score", "error"]
    assert set(frame["variant"]) == {"short", "long"}
    single = km.sweep(make_conversations(3), PROMPTS)
    assert all(math.isnan(a) for a in single.leaderboard()["agreement"])


def test_the_leaderboards_numbers_are_the_runs_stats(llm):
    result = km.sweep(make_conversations(3), PROMPTS, models=MODELS, samples=2)
    board = result.leaderboard().set_index("variant")
    for name in result.runs:
        runs = [cell.run for cell in result.samples_of(name)]
        assert board.loc[name, "cost"] == pytest.approx(sum(r.stats.cost for r in runs))
        assert board.loc[name, "saved"] == pytest.approx(sum(r.stats.saved_cost for r in runs))
        assert board.loc[name, "errors"] == sum(r.stats.errors for r in runs)
        assert board.loc[name, "fresh"] == sum(r.stats.fresh for r in runs)
    frame = result.to_pandas()
    assert frame.groupby("variant")["cost"].sum().to_dict() == pytest.approx(board["cost"].to_dict())


def test_each_sample_is_a_run_in_the_history_that_load_run_and_compare_read(llm):
    result = km.sweep(make_conversations(3), PROMPTS, samples=2, name="wording")
    labels = set(km.runs()["label"])
    assert {"wording/short", "wording/long", "wording/short/s1", "wording/long/s1"} <= labels
    loaded = km.load_run("wording/short")
    assert [r.summary for r in loaded] == [r.summary for r in result.runs["short"]]
    assert "3 of 3 conversations differ" in str(km.compare("wording/short", "wording/long"))


def test_a_python_scorer_ranks_the_variants_by_mean_score(llm):
    result = km.sweep(make_conversations(3), PROMPTS, scorer=lambda conversation, output: "detail" in output)
    board = result.leaderboard()
    assert board["variant"].tolist() == ["long", "short"] and board["score"].tolist() == [1.0, 0.0]
    assert len(llm.chat_requests) == 6, "a Python scorer calls nothing"


JUDGE = "Rate this summary from 1 to 5.\nSummary: {{ output }}\nConversation:\n{{ transcript }}"


def test_a_judges_calls_are_cached_and_costed_in_the_variants_cost(llm):
    llm.reply = lambda messages: "Score: 4" if "Rate this" in messages[-1]["content"] else "a summary"
    try:
        first = km.sweep(make_conversations(3), PROMPTS, scorer=JUDGE)
        judged = [r for r in llm.chat_requests if "Rate this" in r.messages[-1]["content"]]
        assert len(judged) == 3, "both variants answer 'a summary': one judge call per conversation"
        board = first.leaderboard().set_index("variant")
        assert board["score"].tolist() == [4.0, 4.0]
        runs_cost = sum(r.stats.cost for r in first.runs.values())
        assert board["cost"].sum() > runs_cost, "the judge's cost counts in the variants' cost"

        llm.reset()
        again = km.sweep(make_conversations(3), PROMPTS, scorer=JUDGE)
    finally:
        llm.reply = None
    assert llm.chat_requests == [], "a re-run judges from the cache"
    assert again.leaderboard()["score"].tolist() == [4.0, 4.0]
    everything = board["cost"].sum() + board["saved"].sum()  # the variants' identical judge calls were made once
    assert again.leaderboard()["saved"].sum() == pytest.approx(everything)


def test_a_judge_prompt_must_use_the_output():
    with pytest.raises(km.errors.TemplateError, match="never uses {{ output }}"):
        km.sweep(make_conversations(1), PROMPTS, scorer="Rate {{ transcript }}")


def test_judge_replies_are_read_as_their_last_number_or_a_verdict():
    assert judge_score("The summary is fine.\nScore: 3") == 3.0 and judge_score("4.5 — clear") == 4.5
    assert judge_score("PASS") == 1.0 and judge_score("No, it misses the order.") == 0.0
    assert judge_score("Summary: order 1234 [3f9a01bc]") is None, "a stray number is no score"


def test_max_cost_refuses_the_whole_sweep_before_anything_is_sent(llm):
    with pytest.raises(BudgetError, match="nothing was sent"):
        km.sweep(make_conversations(20), PROMPTS, models=MODELS, max_cost=1e-6)
    assert llm.chat_requests == []
    with pytest.raises(BudgetError, match="no price"):
        km.sweep(make_conversations(2), PROMPTS, models=[MODEL, UNPRICED_MODEL], max_cost=1.0)
    assert llm.chat_requests == []
    result = km.sweep(make_conversations(2), PROMPTS, models=MODELS, max_cost=1.0)
    assert sum(run.stats.fresh for run in result.runs.values()) == 8


def test_grid_mistakes_are_refused_naming_the_dimension():
    with pytest.raises(ConfigError, match="models lists a value twice"):
        km.sweep(make_conversations(1), PROMPTS, models=[MODEL, MODEL])
    with pytest.raises(ConfigError, match="params\\['temperature'\\] must be a non-empty list"):
        km.sweep(make_conversations(1), PROMPTS, params={"temperature": 0.7})
    with pytest.raises(ConfigError, match="samples=0"):
        km.sweep(make_conversations(1), PROMPTS, samples=0)


def test_cache_key_tells_samples_apart_and_sample_0_is_the_plain_key():
    messages = [{"role": "user", "content": "hi"}]
    plain = km.cache_key(model=MODEL, messages=messages)
    assert km.cache_key(model=MODEL, messages=messages, sample=0) == plain
    assert len({km.cache_key(model=MODEL, messages=messages, sample=s) for s in range(4)}) == 4
    with pytest.raises(ConfigError, match="sample=-1"):
        km.complete("hi", sample=-1)


VARIANT_CELL = """### variant: short
In five words:
{{ transcript }}
### variant: long
Summarise in detail:
{{ transcript }}"""


def test_a_cell_with_comma_lists_is_a_sweep_bound_to_out_and_each_variant_is_a_run_compare_reads(shell, llm):
    shell.run_line_magic("config", "KuraMagics.panel = 'text'")
    shell.user_ns["convs"] = make_conversations(3)
    result = shell.run_cell_magic("summarise", f"convs --out matrix --model {MODEL},openai/gpt-4o "
                                  "--temperature 0,0.7", PROMPTS["short"])

    assert shell.user_ns["matrix"] is result and len(result.runs) == 4
    assert sent(llm) == {(m.removeprefix("openai/"), t): 3 for m in MODELS for t in (0, 0.7)}
    assert "<table" in result._repr_html_() and "gpt-4o,t=0.7" in repr(result)
    comparison = shell.run_line_magic("kura", "compare matrix/gpt-4o-mini,t=0 matrix/gpt-4o,t=0.7")
    assert "temperature: 0.0 → 0.7" in str(comparison)


def test_variant_lines_samples_and_a_scorer_of_the_notebook_make_a_sweep(shell, llm):
    shell.run_line_magic("config", "KuraMagics.panel = 'text'")
    shell.user_ns.update(convs=make_conversations(2), detailed=lambda conversation, output: "detail" in output)
    result = shell.run_cell_magic("summarise", "convs --out wording --samples 2 --scorer detailed", VARIANT_CELL)

    assert list(result.runs) == ["short", "long"] and len(llm.chat_requests) == 2 * 2 * 2
    assert result.leaderboard()["variant"].tolist() == ["long", "short"]


def test_a_plain_cell_stays_a_plain_run(shell, llm):
    shell.user_ns["convs"] = make_conversations(2)
    run = shell.run_cell_magic("summarise", "convs --out plain --temperature 0.5", PROMPTS["short"])
    assert isinstance(run, km.SummaryRun) and run.label == "plain"


def test_the_magics_max_cost_refuses_the_sweep_before_sending(shell, llm):
    from IPython.core.error import UsageError

    shell.user_ns["convs"] = make_conversations(20)
    with pytest.raises(UsageError, match="nothing was sent"):
        shell.run_cell_magic("summarise", f"convs --model {MODEL},openai/gpt-4o --max-cost 0.000001", PROMPTS["long"])
    assert llm.chat_requests == []
    with pytest.raises(UsageError, match="--scorer nothing: define nothing"):
        shell.run_cell_magic("summarise", "convs --samples 2 --scorer nothing", PROMPTS["long"])


def test_ctrl_c_stops_every_variant_and_returns_the_partial_sweep_unjudged(tmp_path):
    from helpers import API_KEY
    from test_process import run_python

    script = f"""
        import json, os, signal
        import kura_magic
        from kura_magic.testing import LoopbackLLM
        convs = [{{"chat_id": f"c{{i}}", "messages": [{{"role": "user", "content": f"q {{i}}"}}]}} for i in range(30)]
        with LoopbackLLM(latency_s=0.2) as server:
            os.environ.update(OPENAI_API_BASE=server.url, OPENAI_API_KEY="{API_KEY}")
            pressed = []
            def press_ctrl_c(variant, stats):  # once, as a person would, when a few rows are done
                if stats.fresh >= 2 and not pressed:
                    pressed.append(True)
                    os.kill(os.getpid(), signal.SIGINT)
            result = kura_magic.sweep(convs, {{"a": "A {{{{ transcript }}}}", "b": "B {{{{ transcript }}}}"}},
                                      models=["{MODEL}"], scorer="Score: {{{{ output }}}}", on_progress=press_ctrl_c)
            judged = sum("Score:" in r.messages[-1]["content"] for r in server.chat_requests)
            sent = server.request_count
        done = sum(run.stats.done for run in result.runs.values())
        print(json.dumps(dict(interrupted=result.interrupted, done=done, sent=sent, judged=judged, scored=result.scored)))
    """
    env = {"KURA_MAGIC_CACHE": str(tmp_path / "c"), "KURA_MAGIC_MAX_CONCURRENCY": "2"}
    report = json.loads(run_python(script, env=env))

    assert report["interrupted"] is True and report["scored"] is False and report["judged"] == 0
    assert 2 <= report["done"] < 60 and report["sent"] < 60


def test_the_grid_escapes_outputs_tints_disagreements_and_edges_the_odd_cell(llm):
    llm.reply = lambda messages: "<b>odd</b>" if "Odd" in messages[-1]["content"] else "same"
    try:
        prompts = {"a": "A {{ transcript }}", "b": "B {{ transcript }}", "odd": "Odd {{ transcript }}"}
        page = km.sweep(make_conversations(2), prompts)._repr_html_()
    finally:
        llm.reply = None
    assert "&lt;b&gt;odd&lt;/b&gt;" in page and "<b>odd" not in page
    assert page.count('<tr class="kura-differs">') == 2 and page.count('class="kura-odd"') == 2
    assert "2 of 2 conversations differ between variants" in page
