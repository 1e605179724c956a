"""The magics, driven through a real InteractiveShell against the loopback LLM server."""

from __future__ import annotations

import json
import re

import pandas
import pytest
from IPython.core.error import UsageError

import kura_magic as km
from helpers import PROMPT, make_conversations
from kura_magic.notebook.magics import KuraMagics
from kura_magic.inputs.samples import sample_conversations





def summarise(shell, line: str, prompt: str = PROMPT):
    return shell.run_cell_magic("summarise", line, prompt)


def test_a_cell_run_twice_sends_n_then_zero_requests(shell, llm):
    shell.user_ns["convs"] = make_conversations(6)

    first = summarise(shell, "convs --out s")
    assert llm.request_count == 6
    assert (first.stats.fresh, first.stats.cached) == (6, 0)

    second = shell.run_cell_magic("summarize", "convs --out s", PROMPT)
    assert llm.request_count == 6, "the re-run must be served from the cache"
    assert (second.stats.fresh, second.stats.cached) == (0, 6)
    assert second.stats.saved_cost == pytest.approx(first.stats.cost)
    assert shell.user_ns["s"] is second


def test_the_run_is_bound_to_summaries_by_default_and_carries_provenance(shell, llm):
    shell.user_ns["convs"] = make_conversations(3)

    run = summarise(shell, "convs")

    assert shell.user_ns["summaries"] is run
    data, metadata = shell.display_formatter.format(run)
    assert 'class="kura-results mathjax_ignore"' in data["text/html"]
    provenance = metadata["kura_magic"]
    assert provenance["model"] == "openai/gpt-4o-mini"
    assert provenance["experiment"] == "default"
    assert provenance["stats"]["fresh"] == 3
    assert provenance["keys"] == [r.key for r in run]


def test_the_shipped_samples_are_varied_kura_conversations():
    samples = sample_conversations()

    assert len({c.chat_id for c in samples}) == len(samples) == 40
    assert all(2 <= len(c.messages) <= 6 for c in samples)
    assert {"channel", "plan"} <= set(samples[0].metadata)
    assert any("¿" in c.transcript() or "¡" in c.transcript() for c in samples)
    assert [c.chat_id for c in sample_conversations(3)] == ["conv-001", "conv-002", "conv-003"]


def test_the_template_sees_the_notebooks_variables(shell, llm):
    shell.user_ns["convs"] = make_conversations(2)
    shell.user_ns["product"] = "Tidewater"

    summarise(shell, "convs", "Summarise this chat about {{ product }}:\n{{ transcript }}")

    sent = [r.messages[-1]["content"] for r in llm.chat_requests]
    assert all(text.startswith("Summarise this chat about Tidewater:") for text in sent)


def test_data_can_be_a_jsonl_path_or_a_dataframe(shell, llm, tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in make_conversations(3)))
    shell.user_ns["frame"] = pandas.DataFrame({"id": ["x", "y"], "text": ["refund please", "login fails"]})

    from_file = summarise(shell, str(path))
    from_frame = summarise(shell, "frame")

    assert [r.conversation_id for r in from_file] == ["c0", "c1", "c2"]
    assert [r.conversation_id for r in from_frame] == ["x", "y"]
    assert llm.request_count == 5


def test_schema_names_a_pydantic_class_of_the_notebook(shell, llm):
    shell.run_cell(
        "from pydantic import BaseModel\n"
        "class Ticket(BaseModel):\n"
        "    summary: str\n"
        "    urgent: bool\n"
        "convs = " + repr(make_conversations(3))
    )

    run = summarise(shell, "convs --schema Ticket --out tickets")

    assert all(isinstance(r.summary, shell.user_ns["Ticket"]) for r in run)
    assert {"summary", "urgent"} <= set(run.to_pandas().columns)
    schema = llm.chat_requests[0].body["response_format"]["json_schema"]["schema"]
    assert set(schema["properties"]) == {"summary", "urgent"}


@pytest.mark.parametrize(
    ("flags", "mode"),
    [("", "read_write"), ("--refresh", "refresh"), ("--no-cache", "off"), ("--read-only", "read_only")],
)
def test_cache_flags_select_the_run_s_cache_mode_and_it_is_in_the_provenance(shell, llm, flags, mode):
    shell.user_ns["convs"] = make_conversations(2)

    run = summarise(shell, f"convs {flags}")

    assert run.cache_mode == mode
    assert shell.display_formatter.format(run)[1]["kura_magic"]["cache_mode"] == mode

def test_dry_run_calls_nothing_and_says_what_a_run_would_do(shell, llm):
    shell.user_ns["convs"] = make_conversations(5)
    summarise(shell, "convs --limit 2")
    llm.reset()

    report = summarise(shell, "convs --dry-run --out ignored")

    assert llm.request_count == 0
    assert isinstance(report, km.run.results.Estimate)
    assert (report.total, report.cached, report.fresh) == (5, 2, 3)
    assert "ignored" not in shell.user_ns


def test_limit_model_temperature_max_tokens_and_concurrency_reach_the_server(shell, llm):
    shell.user_ns["convs"] = make_conversations(6)

    run = summarise(shell, "convs --limit 4 --model openai/gpt-4o --temperature 0.5 "
                           "--max-tokens 30 --max-concurrency 1")

    assert len(run) == 4
    bodies = [r.body for r in llm.chat_requests]
    assert len(bodies) == 4
    assert {(b["model"], b["temperature"], b["max_tokens"]) for b in bodies} == {("gpt-4o", 0.5, 30)}
    assert llm.peak_in_flight == 1


def test_an_experiment_is_its_own_cache(shell, llm):
    shell.user_ns["convs"] = make_conversations(3)
    summarise(shell, "convs")

    other = summarise(shell, "convs --experiment other")

    assert other.experiment == "other"
    assert other.stats.fresh == 3
    assert llm.request_count == 6
    assert km.active_experiment() == "default"


def test_max_cost_stops_fresh_calls(shell, llm):
    shell.user_ns["convs"] = make_conversations(4)

    run = summarise(shell, "convs --max-cost 0.000000001")

    assert llm.request_count == 0
    assert run.stats.skipped == 4
    assert all(r.status == "skipped" for r in run)


@pytest.mark.parametrize(
    ("line", "prompt", "message"),
    [
        ("nowhere", PROMPT, "no variable named 'nowhere'"),
        ("convs", "Summarise {{ transcript }", "the prompt does not parse"),
        ("convs", "Summarise {{ trnscript }}", "never uses {{ transcript }}"),
        ("convs", "{{ transcript }} for {{ customer }}", "'customer' is undefined"),
        ("convs --schema Verdict", PROMPT, "no schema named 'Verdict'"),
        ("number", PROMPT, "cannot read conversations from a int"),
        ("convs --refresh --no-cache", PROMPT, "--refresh and --no-cache contradict"),
        ("convs --out 2bad", PROMPT, "not a Python variable name"),
        ("convs --limit 0", PROMPT, "limit must be at least 1"),
        ("convs --temprature 0.5", PROMPT, "unrecognized arguments: --temprature 0.5 .did you mean --temperature.."),
        ("convs", "{{ transcript }} for {{ customer }}", "define it in the notebook, in a cell above this one"),
    ],
    ids=["unknown-name", "bad-template", "no-transcript", "undefined-variable", "unknown-schema",
         "not-conversations", "contradicting-flags", "bad-out", "bad-limit", "mistyped-flag", "undefined-hint"],
)
def test_mistakes_are_one_line_usage_errors_and_send_nothing(shell, llm, line, prompt, message):
    shell.user_ns["convs"] = make_conversations(2)
    shell.user_ns["number"] = 42

    with pytest.raises(UsageError, match="^.*" + message.replace("{", r"\{").replace("}", r"\}")) as caught:
        summarise(shell, line, prompt)

    assert "\n" not in str(caught.value)
    assert llm.request_count == 0


ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.parametrize(
    ("line", "prompt", "kind", "message"),
    [
        ("nowhere", PROMPT, "data error", "no variable named 'nowhere'"),
        ("number", PROMPT, "data error", "cannot read conversations from a int"),
        ("convs", "Summarise {{ transcript", "template error", "the prompt does not parse"),
        ("convs --model openai/gpt-4o-mini", PROMPT, "missing API key", "set OPENAI_API_KEY"),
        ("convs --limit 0", PROMPT, "setting error", "limit must be at least 1"),
        ("convs --refresh --no-cache", PROMPT, "usage error", "--refresh and --no-cache contradict"),
    ],
    ids=["unknown-name", "not-conversations", "bad-template", "missing-key", "bad-limit", "contradicting-flags"],
)
def test_a_mistake_in_a_cell_is_one_red_card_that_fails_the_cell(shell, llm, capsys, monkeypatch, line, prompt,
                                                                 kind, message):
    monkeypatch.delenv("OPENAI_API_KEY")  # only the missing-key case gets that far
    shell.user_ns.update(convs=make_conversations(2), number=42)
    capsys.readouterr()

    result = shell.run_cell(f"%%summarise {line}\n{prompt}")

    assert not result.success and isinstance(result.error_in_exec, UsageError), "Run All stops at this cell"
    raw = capsys.readouterr()
    shown = ANSI.sub("", raw.out + raw.err)
    card = shown[shown.index("✖"):].strip().splitlines()
    assert card[0].strip() == f"✖ {kind}", "the card's first line names the kind of mistake"
    assert message in " ".join(line.removeprefix("│ ") for line in card[1:])
    assert all(line.startswith("│ ") for line in card[1:])
    assert "\x1b[1;97;41m ✖ " in raw.out + raw.err, "white on red in a terminal or JupyterLab"
    assert "Traceback" not in shown and "UsageError" not in shown and shown.count(message) == 1
    assert llm.request_count == 0


def test_a_card_has_no_colour_when_ipython_has_none(shell, llm, capsys):
    before = shell.colors
    shell.colors = "nocolor"  # `ipython --colors=NoColor`, or %colors nocolor
    try:
        shell.run_cell("%kura compare only-one")
    finally:
        shell.colors = before

    shown = capsys.readouterr().out
    assert shown.startswith("✖ usage error\n│ %kura compare takes two runs") and "\x1b[" not in shown


def test_offline_mode_turns_misses_into_an_error_and_serves_hits(shell, llm):
    shell.user_ns["convs"] = make_conversations(3)
    summarise(shell, "convs --limit 2")
    llm.reset()

    assert "offline mode on" in shell.run_line_magic("kura", "offline on")
    cached = summarise(shell, "convs --limit 2")
    with pytest.raises(UsageError, match="offline mode: 1 of 3 calls"):
        summarise(shell, "convs")
    assert "offline mode off" in shell.run_line_magic("kura", "offline off")

    assert cached.stats.cached == 2
    assert llm.request_count == 0


def test_model_text_is_escaped_in_the_runs_html(shell, llm, monkeypatch):
    monkeypatch.setattr(llm, "reply", lambda messages: "<script>alert(1)</script>")
    shell.user_ns["convs"] = make_conversations(2)

    run = summarise(shell, "convs")
    html = shell.display_formatter.format(run)[0]["text/html"]

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert" not in html  # the table's own scripts aside


def test_help_lists_every_option():
    help_text = KuraMagics.summarise.__doc__
    for flag in ("--out", "--model", "--temperature", "--max-tokens", "--schema", "--experiment",
                 "--max-concurrency", "--max-cost", "--limit", "--refresh", "--no-cache",
                 "--read-only", "--dry-run"):
        assert flag in help_text
    assert "%kura compare RUN_A RUN_B" in KuraMagics.kura.__doc__


def test_kura_experiment_shows_and_switches_the_active_experiment(shell, llm):
    shell.user_ns["convs"] = make_conversations(2)

    assert shell.run_line_magic("kura", "experiment") == "active experiment: default (0 entries cached)"
    assert shell.run_line_magic("kura", "experiment scratch").startswith("active experiment: scratch")
    run = summarise(shell, "convs")

    assert run.experiment == km.active_experiment() == "scratch"
    assert km.cache_info().experiments["scratch"].entries == 2


def test_kura_config_sets_settings_and_never_shows_the_key(shell):
    shown = shell.run_line_magic("kura", "config api_key=sk-very-secret max_concurrency=3")

    assert "sk-very-secret" not in shown
    assert "api_key = **********  (%kura config)" in shown
    assert "max_concurrency = 3  (%kura config)" in shown
    assert km.config.settings().api_key.get_secret_value() == "sk-very-secret"
    shown = shell.run_line_magic("kura", "config max_concurrency= api_key=")
    assert km.config.settings().max_concurrency == 20
    assert "max_concurrency = 20  (default)" in shown


def test_kura_config_says_where_each_value_comes_from_including_litellm_s_variables(shell, monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_CACHE_SIZE_LIMIT", str(3 * 1024**2))
    monkeypatch.delenv("KURA_MAGIC_API_KEY", raising=False)
    monkeypatch.delenv("KURA_MAGIC_API_BASE", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-litellm-reads-this")
    monkeypatch.setenv("OPENAI_API_BASE", "http://team:pw@127.0.0.1:9/v1")

    shown = shell.run_line_magic("kura", "config").splitlines()

    assert "cache_size_limit = 3.0 MiB  (KURA_MAGIC_CACHE_SIZE_LIMIT)" in shown
    assert "embedding_size_limit = 5.0 GiB  (default)" in shown
    assert "api_key = **********  (OPENAI_API_KEY, read by litellm)" in shown
    assert "api_base = http://team:***@127.0.0.1:9/v1  (OPENAI_API_BASE, read by litellm)" in shown
    assert not any("sk-litellm" in line or ":pw@" in line for line in shown)


def test_a_password_in_our_own_api_base_is_masked_in_the_settings_and_config(shell, monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_API_BASE", "http://team:base-secret@127.0.0.1:9/v1")

    shown = [repr(km.config.settings()), shell.run_line_magic("kura", "config")]

    assert all("base-secret" not in text for text in shown)
    assert "http://team:***@127.0.0.1:9/v1" in shown[0]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("config max_concurrency", "takes key=value pairs"),
        ("config colour=blue", "unknown setting 'colour'"),
        ("config max_concurrency=0", "max_concurrency"),
        ("bogus", "unknown %kura subcommand 'bogus'"),
        ("local bogus", "use %kura local start|stop|status"),
        ("offline maybe", "takes on or off"),
        ("stats --all", "--all goes with %kura clear only"),
        ("stats --experiment x", "--experiment goes with %kura clear and runs only"),
        ("runs --changed", "--changed goes with %kura compare only"),
        ("runs latest", "takes how many of the latest runs"),
        ("compare -1 -2", "no run '-1': no runs are recorded yet"),
        ("clear --all --experiment x", "either --experiment NAME or --all"),
        ("clear --history", "--history goes with --all"),
        ("compare onlyone", "takes two runs"),
        ("experiment a b", "too many arguments"),
    ],
)
def test_kura_mistakes_are_usage_errors(shell, line, message):
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("kura", line)


def test_kura_stats_and_clear_work_per_experiment(shell, llm):
    shell.user_ns["convs"] = make_conversations(3)
    summarise(shell, "convs")
    summarise(shell, "convs --limit 2 --experiment other")

    stats = shell.run_line_magic("kura", "stats").set_index("experiment")
    assert stats.loc["default", "entries"] == 3
    assert stats.loc["other", "entries"] == 2
    assert bool(stats.loc["default", "active"])

    assert shell.run_line_magic("kura", "clear --experiment other") == "cleared 2 entries of experiment 'other'"
    assert summarise(shell, "convs").stats.cached == 3
    assert summarise(shell, "convs --limit 2 --experiment other").stats.fresh == 2
    assert llm.request_count == 3 + 2 + 2

    recorded = len(km.runs())
    assert shell.run_line_magic("kura", "clear --all") == (
        "cleared 5 entries from the whole cache; the run history is kept (--history clears it too)")
    assert km.cache_info().entries == 0 and len(km.runs()) == recorded == 4
    summarise(shell, "convs --limit 1")
    assert shell.run_line_magic("kura", "clear --all --history") == (
        "cleared 1 entries from the whole cache and 5 recorded runs")
    assert len(km.runs()) == 0


def test_kura_alone_shows_the_cache_panel(shell, llm):
    shell.user_ns["convs"] = make_conversations(2)
    summarise(shell, "convs")

    panel = shell.run_line_magic("kura", "")

    assert "default: 2 entries" in repr(panel)
    assert "cache: 2 entries" in repr(panel)


def test_kura_compare_marks_the_rows_whose_output_differs(shell, llm):
    before = make_conversations(4)
    after = make_conversations(4)
    after[1]["messages"][0]["content"] = "<b>cancel</b> my order 1"
    shell.user_ns.update(before=before, after=after)
    summarise(shell, "before --out a")
    summarise(shell, "after --out b")

    comparison = shell.run_line_magic("kura", "compare a b")

    assert comparison.frame["differs"].tolist() == [False, True, False, False]
    html = shell.display_formatter.format(comparison)[0]["text/html"]
    assert html.count('class="kura-differs"') == 1
    assert "&lt;b&gt;cancel&lt;/b&gt;" in html and "<b>" not in html
    assert "1 of 4 conversations differ" in repr(comparison)
    assert "to see only the 1 that differs: %kura compare a b --changed" in html + repr(comparison)
    only = shell.run_line_magic("kura", "compare a b --changed")
    assert only.rows["conversation_id"].tolist() == ["c1"], "--changed works on the runs in memory"
    assert shell.display_formatter.format(only)[0]["text/html"].count("<tr") == 2


def test_kura_compare_names_what_is_not_a_run(shell):
    shell.user_ns["a"] = [1, 2]

    with pytest.raises(UsageError, match="'a' is a list, not a run"):
        shell.run_line_magic("kura", "compare a b")


def test_kura_runs_lists_the_recorded_runs_as_an_escaped_table(shell, llm):
    shell.user_ns["convs"] = make_conversations(2)
    count = shell.execution_count
    shell.run_cell(f"%%summarise convs --out v1 --experiment <i>x</i>\n{PROMPT}", store_history=True)
    summarise(shell, "convs --out v2", PROMPT.replace("one line", "a sentence"))

    history = shell.run_line_magic("kura", "runs")

    bundle = shell.display_formatter.format(history)[0]
    assert "<i>" not in bundle["text/html"] and "&lt;i&gt;x&lt;/i&gt;" in bundle["text/html"]
    assert bundle["text/plain"].startswith("2 recorded runs, newest first")
    assert history.frame["label"].tolist() == ["v2", "v1"]
    assert history.frame["cell"].tolist()[1] == f"In [{count}]", "the cell the run came from"
    latest = shell.run_line_magic("kura", "runs 1")
    assert latest.frame["label"].tolist() == ["v2"] and repr(latest).startswith("1 of 2 recorded runs\n")
    assert shell.run_line_magic("kura", "runs --experiment <i>x</i>").frame["label"].tolist() == ["v1"]


def test_kura_compare_takes_recorded_runs_after_the_variables_are_gone(shell, llm):
    shell.user_ns["convs"] = make_conversations(3)
    summarise(shell, "convs --out a")
    summarise(shell, "convs --out b --limit 2", PROMPT.replace("one line", "a sentence"))
    shell.user_ns.pop("a"), shell.user_ns.pop("b")
    llm.reset()

    comparison = shell.run_line_magic("kura", "compare a -1 --changed")

    assert llm.request_count == 0
    assert comparison.changed == 2 and list(comparison.only_in.values()) == [1] and comparison.changed_only
    assert comparison.rows["conversation_id"].tolist() == ["c0", "c1", "c2"], "--changed works on refs too"
    assert "prompt: 2 words changed: Summarise this support chat in [-one line:-]{+a sentence:+}" in repr(comparison)
    with pytest.raises(UsageError, match="no recorded run 'zz'"):  # not hex: no run id starts so
        shell.run_line_magic("kura", "compare a zz")


def test_magics_made_without_a_shell_say_how_to_load_them():
    magics = KuraMagics()  # what code gets that builds the class itself instead of %load_ext

    with pytest.raises(UsageError, match="load them in IPython or Jupyter with %load_ext kura_magic"):
        magics.summarise("convs", PROMPT)
    with pytest.raises(UsageError, match="no IPython shell"):
        magics.kura("compare a b")


def test_a_clear_says_when_another_process_has_calls_in_flight(shell, llm, backend):
    from kura_magic.config import settings
    from kura_magic.notebook.panels import CachePanel
    from kura_magic.storage.opening import open_store

    shell.user_ns["convs"] = make_conversations(3)
    summarise(shell, "convs")
    store = open_store(settings())
    claimed = store.claim_many(["k1", "k2"], experiment="default", token="another-kernel", ttl_s=30)
    assert claimed == {"k1", "k2"}  # as a run in another kernel holds the calls it is making

    panel = CachePanel(experiment="default", info=km.cache_info())
    panel.clear_all()  # the first click asks, and says so
    note = shell.run_line_magic("kura", "clear --experiment default")
    store.release({"k1": "another-kernel", "k2": "another-kernel"}, experiment="default")

    warning = "2 calls are in flight on this cache right now (another kernel or process is running)"
    assert warning in panel.texts()["kura-status"]
    assert note.startswith("cleared 3 entries of experiment 'default'") and warning in note
    assert "in flight" not in shell.run_line_magic("kura", "clear --all")
