"""compare_runs: two runs side by side per conversation, differing rows marked, HTML escaped."""

from __future__ import annotations

import pandas
import pytest
from pydantic import BaseModel

from kura_magic.run.compare import Comparison, compare_runs, output_text
from kura_magic.errors import ConfigError
from kura_magic.run.results import SummaryResult, SummaryRun
from kura_magic.types import RunStats
from kura_magic.views.text import header_lines


def run_of(*results: SummaryResult, prompt: str = "") -> SummaryRun:
    return SummaryRun(list(results), RunStats(total=len(results)), model="m", experiment="default", prompt=prompt)


def ok(cid: str, summary) -> SummaryResult:
    return SummaryResult(conversation_id=cid, summary=summary)


class Verdict(BaseModel):
    topic: str
    urgent: bool


def test_rows_follow_the_first_run_and_mark_differences():
    a = run_of(ok("1", "refund"), ok("2", "login"), ok("3", "export"))
    b = run_of(ok("1", "refund"), ok("2", "password reset"), ok("3", "export"))

    frame = compare_runs(a, b, labels=("v1", "v2"))

    assert list(frame.columns) == ["conversation_id", "v1", "v2", "differs"]
    assert frame["conversation_id"].tolist() == ["1", "2", "3"]
    assert frame["differs"].tolist() == [False, True, False]
    assert frame.loc[1, "v2"] == "password reset"


def test_a_conversation_in_only_one_run_is_shown_and_counted_apart():
    frame = compare_runs(run_of(ok("1", "x")), run_of(ok("1", "x"), ok("9", "new")))

    assert frame["conversation_id"].tolist() == ["1", "9"]
    assert frame["differs"].tolist() == [False, False], "nothing to compare it with"
    assert Comparison(frame).only_in == {"b": 1}
    assert pandas.isna(frame.loc[1, "a"])
    assert "(not in this run)" in Comparison(frame)._repr_html_()


def test_schema_outputs_compare_field_by_field_and_errors_are_outputs_too():
    failed = SummaryResult(conversation_id="2", status="error", error="ContentPolicy: refused")
    a = run_of(ok("1", Verdict(topic="billing", urgent=True)), ok("2", "fine"))
    b = run_of(ok("1", Verdict(topic="billing", urgent=False)), failed)

    frame = compare_runs(a, b)

    assert frame["differs"].tolist() == [True, True]
    assert frame.loc[0, "a"] == '{"topic": "billing", "urgent": true}'
    assert output_text(failed) == "[error] ContentPolicy: refused"


def test_html_escapes_model_text_and_marks_rows():
    a = run_of(ok("<i>1</i>", "<script>alert(1)</script>"), ok("2", "same"))
    b = run_of(ok("<i>1</i>", "safe"), ok("2", "same"))

    html = Comparison(compare_runs(a, b, labels=("<a>", "b")))._repr_html_()

    assert "<script" not in html and "<i>" not in html and "<a>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count('class="kura-differs"') == 1
    assert "1 of 2 conversations differ" in html
    assert 'class="kura-compare mathjax_ignore"' in html, "two '$' in summaries are not maths"


def test_text_view_is_a_table_with_changed_words_marked_and_how_to_see_only_the_changes():
    a = run_of(ok("1", "refund"), ok("2", "login"))
    b = run_of(ok("1", "refund"), ok("2", "password"))

    shown = repr(Comparison(compare_runs(a, b, labels=("old", "new"))))
    only_changed = repr(Comparison(compare_runs(a, b, labels=("old", "new")), changed_only=True))

    assert shown.splitlines() == [
        "old vs new: 1 of 2 conversations differ (those first)",
        "to see only the 1 that differs: km.compare(a, b, changed_only=True)",
        "   id  old        new",
        "≠  2   [-login-]  {+password+}",
        "   1   refund     refund",
    ]
    assert only_changed.splitlines()[0] == "old vs new: 1 of 2 conversations differ (only those shown)"
    assert only_changed.splitlines()[2:] == ["≠  2   [-login-]  {+password+}"]


def test_html_rows_that_differ_are_tinted_for_light_and_dark_themes_and_long_outputs_cut():
    long_a = "The customer asked for a refund. " * 10 + "It was issued."
    long_b = "The customer asked for a refund. " * 10 + "It was refused."
    a = run_of(ok("1", "same"), ok("2", long_a), ok("3", "<i>old</i>"))
    b = run_of(ok("1", "same"), ok("2", long_b), ok("3", "<i>new</i>"))

    html = Comparison(compare_runs(a, b))._repr_html_()
    only_changed = Comparison(compare_runs(a, b), changed_only=True)._repr_html_()

    assert "tr.kura-differs>td{background:rgba(" in html and "var(--jp-warn-color1,#ff9800)" in html
    assert "var(--jp-layout-color0,#fff)" in html, "the tint mixes with the theme's own background"
    assert html.count('<tr class="kura-differs">') == 2 and "<th>" not in html, "headers left-aligned too"
    assert html.count('<details class="kura-cut"><summary>The customer asked for a refund.') == 2
    assert '<ins class="kura-added">refused.</ins></details>' in html, "the whole output, its changes marked"
    assert '<del class="kura-removed">&lt;i&gt;old&lt;/i&gt;</del>' in html and "<i>" not in html
    assert "2 of 3 conversations differ" in html
    assert "to see only the 2 that differ: km.compare(a, b, changed_only=True)" in html
    assert "to see only" not in only_changed and only_changed.count("<tr") == 3


@pytest.mark.parametrize("labels", [("a", "a"), ("differs", "b"), ("a", "conversation_id")])
def test_labels_must_be_two_new_column_names(labels):
    with pytest.raises(ConfigError, match="give two different names"):
        compare_runs(run_of(ok("1", "x")), run_of(ok("1", "x")), labels=labels)


def test_changed_words_are_marked_in_both_outputs_and_escaped():
    a = run_of(ok("1", "Refund <b>issued</b> today"), ok("2", "same"))
    b = run_of(ok("1", "Refund <b>refused</b> today"), ok("2", "same"))

    html = Comparison.of(a, b)._repr_html_()

    assert 'Refund <del class="kura-removed">&lt;b&gt;issued&lt;/b&gt;</del> today' in html
    assert 'Refund <ins class="kura-added">&lt;b&gt;refused&lt;/b&gt;</ins> today' in html
    assert "<b>" not in html


def test_the_prompt_diff_and_setting_changes_come_first_and_changed_only_hides_the_rest():
    a = SummaryRun([ok("1", "x"), ok("2", "y")], RunStats(), model="m1", experiment="default",
                   prompt="In one <line>: {{ transcript }}", params={"temperature": 0.0})
    b = SummaryRun([ok("1", "x"), ok("2", "z")], RunStats(), model="m2", experiment="default",
                   prompt="In two <lines>: {{ transcript }}", params={"temperature": 0.7})

    comparison = Comparison.of(a, b, labels=("old", "new"), changed_only=True)

    assert repr(comparison).splitlines()[:3] == [
        "prompt: 2 words changed: In [-one <line>:-]{+two <lines>:+} {{ transcript }}",
        "model: m1 → m2", "temperature: 0.0 → 0.7"]
    html = comparison._repr_html_()
    assert html.index("kura-prompt-diff") < html.index("kura-table")
    assert '<del class="kura-removed">one &lt;line&gt;:</del> <ins class="kura-added">two &lt;lines&gt;:</ins>' in html
    assert html.count("<tr") == 2 and "1 of 2 conversations differ (only those shown)" in html
    assert header_lines(Comparison.of(a, a)) == ["prompt: the same in both runs"]


def test_rows_only_one_run_has_are_counted_apart_not_as_differing():
    a = run_of(*(ok(str(i), "same") for i in range(60)))
    b = run_of(*(ok(str(i), "same" if i else "changed") for i in range(200)))

    comparison = Comparison(compare_runs(a, b))

    assert (comparison.changed, comparison.both, comparison.only_in) == (1, 60, {"b": 140})
    assert repr(comparison).splitlines()[0] == (
        "a vs b: 1 of 60 conversations differ (those first) (140 only in b; compared: the 60 both have)")


def test_a_large_comparison_shows_the_differing_rows_first_and_stays_small_when_saved():
    long = "The customer asked about a refund for an order that arrived damaged. " * 8
    a = run_of(*(ok(str(i), long + str(i)) for i in range(200)))
    b = run_of(*(ok(str(i), long + (str(i) if i % 2 else "other")) for i in range(200)))

    html = Comparison(compare_runs(a, b))._repr_html_()

    assert len(html.encode()) < 150_000, f"{len(html.encode())} bytes in the saved notebook"
    first_row = html[html.index("<tbody>"):][:600]
    assert 'class="kura-differs"' in first_row, "a differing row comes first"
    assert "100 of 200 conversations differ (those first)" in html


def test_the_prompt_diff_is_coloured_for_both_themes_and_keeps_words_apart():
    a = run_of(ok("1", "x"), prompt="Summarise the chat:\n{{ transcript }}")
    b = run_of(ok("1", "x"), prompt="File the chat:\n{{ transcript }}")

    html = Comparison.of(a, b)._repr_html_()

    assert '<del class="kura-removed">Summarise</del> <ins class="kura-added">File</ins>' in html
    assert "del.kura-removed{" in html and "var(--jp-error-color1" in html and "var(--jp-success-color1" in html
