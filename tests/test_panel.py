"""The panels: their text, their widgets and the cache panel's buttons against a real cache and
the loopback server, and the plain-text fallback where no widget front end exists."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from ipywidgets.widgets.widget import _instances as live_widgets

import kura_magic as km
from helpers import PROMPT, make_conversations, schema_with_a_bug
from kura_magic.errors import TemplateError
from kura_magic.formatting import size
from kura_magic.notebook import magics as magics_module
from kura_magic.notebook import panels as panel_module
from kura_magic.notebook.cache_widget import CacheWidget
from kura_magic.notebook.panels import (
    BUSY,
    THROTTLE_S,
    CachePanel,
    RunPanel,
    experiment_names,
    run_going,
    widgets_available,
)
from kura_magic.notebook.run_widget import RunWidget
from kura_magic.types import CacheInfo, ExperimentInfo
from kura_magic.views.text import budget_text, cache_table, cache_texts, run_texts

INFO = CacheInfo(
    entries=5, bytes=3 * 1024,
    experiments={"default": ExperimentInfo(entries=3, bytes=2048), "v2": ExperimentInfo(entries=2, bytes=100)},
)


@pytest.fixture(autouse=True)
def prompt_clicks(monkeypatch):
    """These tests click a confirming second time at once; one test checks the real gap."""
    monkeypatch.setattr(panel_module, "CONFIRM_AFTER_S", 0.0)


# ---------------------------------------------------------------- pure text


def test_run_texts_give_counts_money_and_time():
    stats = km.RunStats(total=10, done=7, fresh=4, cached=3, errors=1, cost=0.0123,
                        saved_cost=0.5, elapsed_s=1.5)

    assert stats.texts() == {
        "kura-done": "7/10 done", "kura-fresh": "3 fresh", "kura-cached": "3 cached",
        "kura-errors": "1 errors", "kura-spent": "spent $0.0123", "kura-saved": "saved $0.500",
        "kura-elapsed": "elapsed 1.50 s",
    }


def test_unknown_costs_read_as_at_least():
    texts = km.RunStats(cost=0.02, cost_unknown=1, saved_cost=0.0, saved_unknown=2).texts()

    assert texts["kura-spent"] == "spent ≥ $0.0200"
    assert texts["kura-saved"] == "saved ≥ $0.00"


def test_budget_stops_and_interruptions_show_beside_the_progress():
    texts = km.RunStats(total=5, done=5, skipped=2, interrupted=True).texts()

    assert texts["kura-done"] == "5/5 done · 2 skipped (budget) · interrupted"


def test_cache_texts_give_sizes_per_experiment_and_in_total():
    assert cache_texts(INFO, "default") == {
        "kura-experiment-size": "default: 3 entries, 2.0 KiB",
        "kura-total-size": "cache: 5 entries, 3.0 KiB on disk",
        "kura-embeddings-size": "embeddings: 0 vectors, 0 B on disk",
        "kura-experiments": "experiments: default (3), v2 (2)",
    }
    assert cache_texts(INFO, "new")["kura-experiment-size"] == "new: 0 entries, 0 B"
    assert cache_texts(CacheInfo(entries=0, bytes=0, enabled=False), "default")["kura-total-size"] == "cache: off"


def test_experiment_names_include_the_active_one():
    assert experiment_names(INFO, "draft") == ["default", "draft", "v2"]


def test_cache_table_has_a_row_per_experiment_and_the_whole_cache():
    table = cache_table(INFO, "v2")

    assert table["experiment"].tolist() == ["default", "v2", "(whole cache)"]
    assert table["entries"].tolist() == [3, 2, 5]
    assert table["size"].tolist() == ["2.0 KiB", "100 B", "3.0 KiB"]
    assert table["active"].tolist() == [False, True, False]


# ---------------------------------------------------------------- widgets


ACTIONS = {"kura-clear-experiment": "clear_experiment", "kura-clear-all": "clear_all",
           "kura-clear-embeddings": "clear_embeddings", "kura-clear-history": "clear_history"}


class Button:
    """A clear button of a cache widget, as the browser draws it (and clicks it)."""

    def __init__(self, widget: CacheWidget, action: str) -> None:
        self.widget, self.action = widget, action

    @property
    def drawn(self) -> dict:
        return next(button for button in self.widget.buttons if button["action"] == self.action)

    @property
    def description(self) -> str:
        return self.drawn["label"]

    @property
    def disabled(self) -> bool:
        return self.widget.disabled

    def click(self) -> None:
        self.widget.click(self.action)


class Chooser:
    """The experiment chooser of a cache widget, as the browser draws it (and types in it)."""

    def __init__(self, widget: CacheWidget) -> None:
        self.widget = widget

    @property
    def value(self) -> str:
        return self.widget.experiment

    @value.setter
    def value(self, name: str) -> None:
        self.widget.choose(name)

    @property
    def options(self) -> list[str]:
        return self.widget.experiments

    @property
    def disabled(self) -> bool:
        return self.widget.disabled


def find(widget: CacheWidget, css_class: str):
    """The control of a cache widget carrying `css_class` (the contract browser tests use)."""
    return Chooser(widget) if css_class == "kura-experiment-select" else Button(widget, ACTIONS[css_class])


def live_run_panel() -> RunPanel:
    return RunPanel.open(widget=True)


def live_cache_panel() -> CachePanel:
    return CachePanel.open(widget=True)


def text(panel: RunPanel | CachePanel, css_class: str) -> str:
    """What the panel's widget shows under `css_class`."""
    return panel.widget.texts.get(css_class, "")


def run_with(panel: RunPanel, conversations, **options) -> km.SummaryRun:
    """A run with the panel beside it, as `%%summarise` drives it: start, progress, finish."""
    panel.start()
    run = km.summarise(conversations, PROMPT, on_progress=panel.update, **options)
    panel.finish(run.stats)
    return run


CONTROLS = ("kura-experiment-select", "kura-clear-experiment", "kura-clear-all", "kura-clear-embeddings",
            "kura-clear-history")


def disabled(root) -> list[bool]:
    return [find(root, css_class).disabled for css_class in CONTROLS]


def test_after_a_run_the_labels_show_counts_and_sizes(llm):
    conversations = make_conversations(5)
    conversations.append({**conversations[0], "chat_id": "again"})
    panel = live_run_panel()

    run = run_with(panel, conversations)

    assert llm.request_count == 5
    assert text(panel, "kura-fresh") == "5 fresh"
    assert text(panel, "kura-cached") == "1 cached"
    assert text(panel, "kura-errors") == "0 errors"
    assert text(panel, "kura-spent") == f"spent {km.formatting.money(run.stats.cost)}"
    share = run.stats.saved_cost / (run.stats.saved_cost + run.stats.cost)
    assert text(panel, "kura-saved") == f"saved {km.formatting.money(run.stats.saved_cost)} ({share:.0%})"
    assert text(panel, "kura-elapsed").startswith("elapsed ")
    info = km.cache_info()
    own = size(info.experiments["default"].bytes)
    assert text(panel, "kura-cache") == f"cache at the end of this run: default: 5 entries, {own}"
    widget = panel.widget
    assert (widget.done, widget.total, widget.state, widget.running) == (6, 6, "ok", False)
    assert [(part["name"], part["count"]) for part in widget.parts] == [("cached", 1), ("fresh", 5), ("errors", 0)]
    assert {"kura-panel", "kura-run"} <= set(widget._dom_classes)


def test_a_run_panel_has_one_line_about_the_cache_and_no_buttons(llm):
    panel = live_run_panel()

    run_with(panel, make_conversations(2))

    shown = {name for row in panel.widget.rows for name in row}
    assert not shown & {*CONTROLS, "kura-total-size", "kura-experiments", "kura-embeddings-size"}
    assert not hasattr(panel.widget, "children"), "a run panel is one widget, with no buttons in it"
    assert "entries" not in " ".join(panel.lines()[:-1]), "only the last line is about the cache"


def test_updates_are_throttled_and_the_last_one_always_shows(llm):
    llm.latency_s = 0.005
    panel = live_run_panel()
    changes = []
    panel.widget.observe(changes.append, names="done")

    run = run_with(panel, make_conversations(60), max_concurrency=4)

    assert panel.widget.done == 60
    assert len(changes) <= run.stats.elapsed_s / THROTTLE_S + 2


def test_clear_experiment_empties_it_and_leaves_the_others(llm):
    conversations = make_conversations(4)
    km.summarise(conversations, PROMPT, experiment="keep")
    run_with(live_run_panel(), conversations)
    panel = live_cache_panel()
    llm.reset()
    button = find(panel.widget, "kura-clear-experiment")

    button.click()
    assert button.description == "Really clear default?"
    assert text(panel, "kura-status") == "click again within 5 s to delete the 4 entries of experiment 'default'"
    assert km.cache_info().entries == 8, "the first click only asks"

    button.click()
    assert button.description == "Clear experiment"
    assert text(panel, "kura-experiment-size") == "default: 0 entries, 0 B"
    assert text(panel, "kura-status") == "cleared 4 entries of experiment 'default'"
    assert km.cache_info().experiments["keep"].entries == 4
    assert run_with(live_run_panel(), conversations).stats.fresh == 4
    assert km.summarise(conversations, PROMPT, experiment="keep").stats.cached == 4
    assert llm.request_count == 4


def test_clear_all_asks_once_then_clears_on_the_second_click(llm):
    conversations = make_conversations(3)
    km.summarise(conversations, PROMPT, experiment="other")
    run_with(live_run_panel(), conversations)
    panel = live_cache_panel()
    button = find(panel.widget, "kura-clear-all")
    assert button.description == "Clear all"

    button.click()
    assert button.description == "Really clear all?"
    assert km.cache_info().entries == 6

    button.click()
    assert button.description == "Clear all"
    assert km.cache_info().entries == 0
    assert text(panel, "kura-total-size") == f"cache: 0 entries, {size(km.cache_info().bytes)} on disk"
    llm.reset()
    assert run_with(live_run_panel(), conversations).stats.fresh == 3
    assert llm.request_count == 3


def test_clear_history_asks_by_its_own_count_then_deletes_only_the_history(llm):
    conversations = make_conversations(3)
    km.summarise(conversations, PROMPT, label="v1")
    km.summarise(conversations, "In one line: {{ transcript }}", label="v2")
    panel = live_cache_panel()
    button, clear_all = find(panel.widget, "kura-clear-history"), find(panel.widget, "kura-clear-all")
    assert button.description == "Clear history"

    clear_all.click()
    clear_all.click()
    assert km.cache_info().entries == 0 and len(km.runs()) == 2, "clearing the cache keeps the history"
    button.click()
    assert button.description == "Delete the 2 recorded runs?"
    assert text(panel, "kura-status") == ("click again within 5 s to delete the 2 recorded runs of the run history; "
                                          "they cannot be rebuilt from the cache")
    assert len(km.runs()) == 2, "the first click only asks"
    clear_all.click()
    assert clear_all.description == "Really clear all?" and button.description == "Clear history", (
        "another button's click is not this confirmation")
    button.click()
    assert len(km.runs()) == 2, "a click after another button's asks again"

    button.click()
    assert button.description == "Clear history"
    assert text(panel, "kura-status") == "deleted 2 recorded runs; the cache's entries are kept"
    assert len(km.runs()) == 0
    llm.reset()
    km.summarise(conversations, PROMPT)
    assert llm.request_count == 3 and len(km.runs()) == 1


def test_a_clear_in_one_cache_panel_updates_every_other_one(llm):
    km.summarise(make_conversations(3), PROMPT)
    first, second = live_cache_panel(), live_cache_panel()
    assert text(second, "kura-experiment-size").startswith("default: 3 entries")

    for _ in range(2):
        find(first.widget, "kura-clear-experiment").click()
    find(first.widget, "kura-experiment-select").value = "v2"

    assert text(second, "kura-experiments") == "experiments: none yet"
    assert text(second, "kura-experiment-size") == "v2: 0 entries, 0 B", "it follows the switch too"
    assert find(second.widget, "kura-experiment-select").value == "v2"


def test_any_other_action_cancels_an_armed_confirmation(llm):
    km.summarise(make_conversations(2), PROMPT)
    panel = live_cache_panel()
    clear_all, clear_experiment = find(panel.widget, "kura-clear-all"), find(panel.widget, "kura-clear-experiment")

    clear_all.click()
    clear_experiment.click()
    assert clear_all.description == "Clear all"
    assert clear_experiment.description == "Really clear default?"
    clear_all.click()
    clear_experiment.click()

    assert clear_all.description == "Clear all"
    assert km.cache_info().experiments["default"].entries == 2, "no second click in a row: nothing cleared"
    clear_experiment.click()
    assert km.cache_info().experiments == {}
    km.summarise(make_conversations(2), PROMPT, experiment="kept")
    clear_all.click()
    find(panel.widget, "kura-experiment-select").value = "kept"
    assert clear_all.description == "Clear all"
    clear_all.click()
    assert km.cache_info().experiments["kept"].entries == 2


def test_the_selector_switches_or_starts_an_experiment(llm):
    km.summarise(make_conversations(2), PROMPT, experiment="v2")
    panel = live_cache_panel()
    selector = find(panel.widget, "kura-experiment-select")
    assert list(selector.options) == ["default", "v2"]

    selector.value = "v2"
    assert km.active_experiment() == "v2"
    assert text(panel, "kura-experiment-size").startswith("v2: 2 entries")

    selector.value = "brand-new"
    assert km.active_experiment() == "brand-new"
    assert text(panel, "kura-experiment-size") == "brand-new: 0 entries, 0 B"
    assert "brand-new" in selector.options
    assert km.summarise(make_conversations(1), PROMPT).experiment == "brand-new"


def test_a_bad_experiment_name_is_reported_in_the_panel(llm):
    panel = live_cache_panel()

    find(panel.widget, "kura-experiment-select").value = "x" * 300

    assert "is not usable" in text(panel, "kura-status")
    assert km.active_experiment() == "default"


def test_clear_embeddings_empties_the_embedding_cache(llm):
    from kura_magic.run import embeddings

    embeddings.embed(["refund", "login"], model="openai/text-embedding-3-small")
    panel = live_cache_panel()
    button = find(panel.widget, "kura-clear-embeddings")

    button.click()
    assert button.description == "Really clear embeddings?"
    assert text(panel, "kura-status") == "click again within 5 s to delete the 2 vectors of the embedding cache"
    assert embeddings.embedding_cache_info().entries == 2

    button.click()
    assert button.description == "Clear embeddings"
    assert text(panel, "kura-status") == "cleared 2 vectors from the embedding cache"
    assert text(panel, "kura-embeddings-size").startswith("embeddings: 0 vectors, ")
    assert embeddings.embedding_cache_info().entries == 0
    llm.reset()
    assert embeddings.embed(["refund"], model="openai/text-embedding-3-small").fresh_count == 1
    assert len(llm.embedding_requests) == 1


def test_a_second_click_within_half_a_second_is_not_a_confirmation(llm, monkeypatch):
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(panel_module, "time", SimpleNamespace(monotonic=lambda: clock.now))
    monkeypatch.setattr(panel_module, "CONFIRM_AFTER_S", 0.5)
    km.summarise(make_conversations(3), PROMPT)
    panel = live_cache_panel()
    button = find(panel.widget, "kura-clear-experiment")

    button.click()
    clock.now += 0.01
    button.click()  # a queued double click, handled back to back after a busy cell
    assert km.cache_info().entries == 3
    assert button.description == "Really clear default?", "still asking"

    clock.now += 1.0
    button.click()
    assert km.cache_info().entries == 0


def test_a_confirmation_older_than_the_window_only_asks_again(llm, monkeypatch):
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(panel_module, "time", SimpleNamespace(monotonic=lambda: clock.now))
    km.summarise(make_conversations(3), PROMPT)
    panel = live_cache_panel()
    button = find(panel.widget, "kura-clear-experiment")

    button.click()
    clock.now += panel_module.CONFIRM_WINDOW_S + 0.5
    panel.render()
    assert button.description == "Clear experiment", "the lapsed question is gone at the next render"
    assert "kura-status" not in panel.texts()

    button.click()
    assert button.description == "Really clear default?", "a late second click asks again"
    assert km.cache_info().entries == 3
    clock.now += panel_module.CONFIRM_WINDOW_S - 0.5
    button.click()
    assert km.cache_info().entries == 0


def test_in_a_running_loop_an_armed_label_turns_back_by_itself(llm, monkeypatch):
    monkeypatch.setattr(panel_module, "CONFIRM_WINDOW_S", 0.05)
    panel = live_cache_panel()
    button = find(panel.widget, "kura-clear-all")

    async def click_and_wait() -> str:
        button.click()
        armed = button.description
        await asyncio.sleep(0.3)
        return armed

    assert asyncio.run(click_and_wait()) == "Really clear all?"
    assert button.description == "Clear all"


def test_the_clear_buttons_look_destructive(llm):
    panel = live_cache_panel()
    style = (Path(panel_module.__file__).parent / "panels.css").read_text(encoding="utf-8")

    assert [button["css"] for button in panel.widget.buttons] == list(CONTROLS[1:]), "every button clears"
    assert "button.kura-destructive {" in style and "kura-destructive.kura-armed" in style
    assert "border-color: var(--kura-colour-failed)" in style, "drawn in the failure colour, apart"


def test_during_a_run_the_buttons_and_selector_are_off(llm):
    panel, cache_panel = live_run_panel(), live_cache_panel()
    seen = []

    def progress(stats: km.RunStats) -> None:
        panel.update(stats)
        seen.append(disabled(cache_panel.widget))

    assert disabled(cache_panel.widget) == [False] * len(CONTROLS)
    panel.start()
    run = km.summarise(make_conversations(3), PROMPT, on_progress=progress, max_concurrency=1)
    panel.finish(run.stats)

    assert seen and all(row == [True] * len(CONTROLS) for row in seen)
    assert disabled(cache_panel.widget) == [False] * len(CONTROLS)


def test_a_click_during_a_run_changes_nothing_and_says_why(llm):
    km.summarise(make_conversations(2), PROMPT, experiment="other")
    km.summarise(make_conversations(2), PROMPT)
    run_panel, panel = live_run_panel(), live_cache_panel()
    buttons = [find(panel.widget, c) for c in CONTROLS[1:]]
    selector = find(panel.widget, "kura-experiment-select")

    def click_everything(stats: km.RunStats) -> None:
        run_panel.update(stats)
        for button in buttons * 2:  # even a confirming second click
            button.click()
        selector.value = "other"

    run_panel.start()
    run = km.summarise(make_conversations(4), PROMPT, on_progress=click_everything)
    run_panel.finish(run.stats)

    assert text(panel, "kura-status") == BUSY
    assert km.cache_info().entries == 6
    assert km.active_experiment() == "default"
    assert selector.value == "default"
    assert [b.description for b in buttons] == ["Clear experiment", "Clear all", "Clear embeddings", "Clear history"]
    buttons[0].click()
    assert buttons[0].description == "Really clear default?", "after the run the buttons work again"


def test_a_rejected_key_echoed_by_the_provider_never_reaches_the_panel(shell, llm, monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_API_KEY", "sk-do-not-show-0123")
    shell.run_line_magic("config", "KuraMagics.panel = 'widgets'")
    shell.user_ns["convs"] = make_conversations(2)
    llm.fail_next(1, status=401)
    before = set(live_widgets)

    with capture_output() as shown, pytest.raises(UsageError, match="rejected the API key") as raised:
        shell.run_cell_magic("summarise", "convs", PROMPT)

    # The panel is emptied, or red if the refused call was counted first: the key is in neither.
    ended = final(shown)
    [root] = [w for key, w in live_widgets.items() if key not in before and isinstance(w, RunWidget)]
    status = root.texts["kura-status"]  # a widget's state outlives its display (a saved notebook keeps it)
    assert "Incorrect API key provided" in status, "the provider's message is shown"
    assert "sk-do-not-show-0123" not in status + str(raised.value) + str(ended)


# ---------------------------------------------------------------- the run widget


def test_the_phase_and_the_time_left_show_only_while_the_run_goes():
    loading = run_texts(km.RunStats(total=4, phase=km.RunStats.LOADING), None, going=True)
    assert loading["kura-phase"] == "loading the provider library…"
    assert "kura-eta" not in loading and "kura-rate" not in loading, "no rate before any answer"
    assert run_texts(km.RunStats(total=4), None, going=True)["kura-phase"] == "starting…"
    calling = km.RunStats(total=4, phase=km.RunStats.CALLING)
    assert run_texts(calling, None, going=True)["kura-phase"] == "calling…", "not '0 in flight' as the calls go out"

    ended = run_texts(km.RunStats(total=4, done=4, fresh=4, cost=0.02, in_flight=0), 2.0, going=False)
    assert ended["kura-rate"] == "2.0 calls/s"
    assert "kura-phase" not in ended and "kura-eta" not in ended
    assert ended["kura-saved"] == "saved $0.00", "no share of nothing saved"
    assert budget_text(km.RunStats(skipped=1, max_cost=0.5)) == "--max-cost $0.500 reached: 1 call skipped"


def test_the_widget_starts_at_the_first_report_then_counts_calls_in_flight_and_time_left(llm, monkeypatch):
    monkeypatch.setattr(panel_module, "THROTTLE_S", 0.0)
    llm.latency_s = 0.05
    panel = live_run_panel()
    widget = panel.widget
    seen, starting = [], []

    def progress(stats: km.RunStats) -> None:
        panel.update(stats)
        starting[:] = starting or [widget.state, widget.running, widget.texts["kura-done"],
                                   widget.texts["kura-phase"], widget.texts["kura-cache"]]
        seen.append((widget.in_flight, widget.texts.get("kura-phase"), widget.texts.get("kura-eta"),
                     widget.elapsed_s, widget.running))

    panel.start()
    run = km.summarise(make_conversations(8), PROMPT, on_progress=progress, max_concurrency=3)
    panel.finish(run.stats)

    assert starting == ["running", True, "0/8 done", "starting…", "cache before this run: default: 0 entries, 0 B"], \
        "shown before any call"
    assert any(n >= 1 and phase == f"calling · {n} in flight" for n, phase, *_ in seen)
    assert any(eta and eta.startswith("ETA ") for _, _, eta, *_ in seen)
    assert all(running for *_, running in seen), "the browser ticks the elapsed time all run long"
    elapsed = [e for *_, e, _ in seen]
    assert elapsed == sorted(elapsed) and elapsed[-1] > 0
    assert (widget.running, widget.state, widget.elapsed_s) == (False, "ok", run.stats.elapsed_s)
    assert "kura-phase" not in widget.texts and "kura-eta" not in widget.texts
    assert re.fullmatch(r"\d+\.\d calls/s", widget.texts["kura-rate"])


def test_a_held_back_update_and_a_new_phase_show_without_waiting_for_the_next_one():
    panel = live_run_panel()
    widget = panel.widget

    async def burst() -> tuple[int, str, int]:
        panel.start()
        panel.update(km.RunStats(total=9, done=1, fresh=1))
        panel.update(km.RunStats(total=9, done=2, fresh=2))  # back to back: held by the throttle
        held = widget.done
        panel.update(km.RunStats(total=9, done=2, fresh=2, phase=km.RunStats.LOADING))
        phase = widget.texts["kura-phase"]
        panel.update(km.RunStats(total=9, done=3, fresh=3, phase=km.RunStats.LOADING))
        await asyncio.sleep(3 * THROTTLE_S)  # then nothing for a while, as when calls are slow
        return held, phase, widget.done

    assert asyncio.run(burst()) == (1, "loading the provider library…", 3)
    panel.finish(km.RunStats(total=9, done=9, fresh=9))


def test_an_all_cached_rerun_shows_it_saved_everything(llm):
    conversations = make_conversations(4)
    first = run_with(live_run_panel(), conversations)
    panel = live_run_panel()

    run = run_with(panel, conversations)

    assert run.stats.cached == 4 and run.stats.saved_cost == first.stats.cost
    assert text(panel, "kura-saved") == f"saved {km.formatting.money(first.stats.cost)} (100%)"
    assert "kura-rate" not in panel.widget.texts, "no calls, no rate of calls"
    assert [(part["name"], part["count"]) for part in panel.widget.parts] == [("cached", 4), ("fresh", 0), ("errors", 0)]


def test_a_budget_stop_says_once_what_one_call_was_estimated_to_cost(shell, llm):
    conversations = make_conversations(20)
    one_call = km.estimate(conversations[:1], PROMPT, max_tokens=8).estimated_cost
    shell.run_line_magic("config", "KuraMagics.panel = 'widgets'")
    shell.user_ns["convs"] = conversations

    with capture_output() as shown:
        run = shell.run_cell_magic(
            "summarise", f"convs --max-tokens 8 --max-cost {one_call * 3.5!r} --max-concurrency 1", PROMPT)

    root = live_widgets[shown.outputs[0].data["application/vnd.jupyter.widget-view+json"]["model_id"]]
    skipped, each = run.stats.skipped, run.stats.skip_estimate
    assert skipped > 10 and llm.request_count == 20 - skipped
    assert one_call / 3 < each < one_call * 3, "the estimate of one call, not of them all"
    said = (f"--max-cost {km.formatting.money(one_call * 3.5)} reached: {skipped} calls skipped "
            f"(about {km.formatting.money(each)} each)")
    assert root.texts["kura-status"] == said
    assert root.state == "warning"
    ended = final(shown)
    assert said in ended["text/plain"]
    assert ended["text/html"].count("calls skipped (about") == 1, "once, not a row per skipped call"


# ---------------------------------------------------------------- through the magic




def final(shown) -> dict[str, str]:
    """What the panel's display shows once the run has ended: its last update."""
    updates = [out for out in shown.outputs if out.update]
    assert len(updates) == 1, "the live view is replaced once, at the end"
    return updates[0].data


def test_in_widget_mode_the_panel_is_live_then_static_html_of_how_the_run_ended(shell, llm):
    shell.run_line_magic("config", "KuraMagics.panel = 'widgets'")
    shell.user_ns["convs"] = make_conversations(3)

    with capture_output() as shown:
        shell.run_cell_magic("summarise", "convs", PROMPT)

    live = shown.outputs[0].data
    root = live_widgets[live["application/vnd.jupyter.widget-view+json"]["model_id"]]
    assert isinstance(root, RunWidget) and "kura-panel" in root._dom_classes
    assert '<span class="kura-done">0/3 done</span>' in live["text/html"], \
        "a fallback of the starting state, for a kernel that dies"
    assert '<span class="kura-phase">starting…</span>' in live["text/html"], "shown before any call"
    ended = final(shown)
    assert set(ended) == {"text/plain", "text/html"}, "no widget left for an export to lose"
    assert '<span class="kura-fresh">3 fresh</span>' in ended["text/html"]
    header = ended["text/html"].split('<div class="kura-head"')[1].split('<div style=')[0]
    assert 'class="kura-bar kura-progress"' in header and 'class="kura-bar-fresh"' in header
    assert re.search(r'<span class="kura-rate">\d+\.\d calls/s</span>', header), "the live header's design, static"
    assert "kura-phase" not in ended["text/html"] and "kura-eta" not in ended["text/html"]
    assert ended["text/plain"].startswith("3/3 done · 3 fresh · 0 cached · 0 errors")
    assert "cache at the end of this run: default: 3 entries" in ended["text/plain"]
    assert root.texts["kura-fresh"] == "3 fresh"


def test_the_magic_turns_the_buttons_off_while_it_runs(shell, llm, monkeypatch):
    seen = []
    update = RunPanel.update

    def recording(panel: RunPanel, stats: km.RunStats) -> None:
        update(panel, stats)
        seen.append(disabled(cache_panel.widget))

    monkeypatch.setattr(RunPanel, "update", recording)
    shell.run_line_magic("config", "KuraMagics.panel = 'widgets'")
    shell.user_ns["convs"] = make_conversations(3)
    cache_panel = shell.run_line_magic("kura", "")

    with capture_output():
        shell.run_cell_magic("summarise", "convs", PROMPT)

    assert seen and all(row == [True] * len(CONTROLS) for row in seen)
    assert disabled(cache_panel.widget) == [False] * len(CONTROLS)
    assert text(cache_panel, "kura-experiment-size").startswith("default: 3 entries")


def test_an_interrupt_before_any_call_leaves_the_error_alone(shell, llm, monkeypatch):
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C before the run could hand back a partial result

    monkeypatch.setattr(magics_module, "summarise", interrupted)
    shell.run_line_magic("config", "KuraMagics.panel = 'widgets'")
    shell.user_ns["convs"] = make_conversations(2)

    with capture_output() as shown, pytest.raises(KeyboardInterrupt):
        shell.run_cell_magic("summarise", "convs", PROMPT)

    assert shown.outputs == [], "no zero-filled panel beside the error"


@pytest.mark.parametrize(
    ("line", "prompt", "message", "shown_before"),
    [
        ("convs", "Summarise {{ transcript", "the prompt does not parse", []),
        ("number", PROMPT, "cannot read conversations from a int", []),
        ("convs --schema Verdict", PROMPT, "no schema named 'Verdict'", []),
        # checked once the cache is looked up and litellm loaded: the panel was up, it is emptied
        ("convs", PROMPT, "set OPENAI_API_KEY", [{"text/plain": ""}]),
        ("convs --model nowhere/no-such-model", PROMPT, "does not know the model", [{"text/plain": ""}]),
    ],
    ids=["bad-template", "not-conversations", "unknown-schema", "missing-key", "unknown-model"],
)
def test_an_error_before_any_call_is_the_cells_one_message_and_frees_the_buttons(
    shell, llm, monkeypatch, line, prompt, message, shown_before
):
    monkeypatch.delenv("OPENAI_API_KEY")
    shell.run_line_magic("config", "KuraMagics.panel = 'widgets'")
    shell.user_ns.update(convs=make_conversations(2), number=42)
    cache_panel = shell.run_line_magic("kura", "")

    with capture_output() as shown, pytest.raises(UsageError, match=message):
        shell.run_cell_magic("summarise", line, prompt)

    assert ([final(shown)] if shown.outputs else []) == shown_before, \
        "the error is the one message: no panel, or the one shown emptied"
    assert disabled(cache_panel.widget) == [False] * len(CONTROLS), "the buttons work again after a failed run"
    assert llm.request_count == 0


def test_offline_misses_are_an_error_with_the_panel_emptied(shell, llm):
    shell.run_line_magic("config", "KuraMagics.panel = 'widgets'")
    shell.run_line_magic("kura", "offline on")
    shell.user_ns["convs"] = make_conversations(2)

    with capture_output() as shown, pytest.raises(UsageError, match="offline mode"):
        shell.run_cell_magic("summarise", "convs", PROMPT)

    assert final(shown) == {"text/plain": ""} and llm.request_count == 0


def test_a_run_whose_template_fails_never_shows_its_panel(llm):
    panel = live_run_panel()
    panel.start()
    with pytest.raises(TemplateError):
        km.summarise(make_conversations(2), "Summarise {{ transcript", on_progress=panel.update)
    panel.fail("the prompt does not parse")

    assert panel.handle is None, "never shown, so nothing to empty"
    assert not run_going(), "the cache panels' buttons are back on"


def test_a_bug_during_a_run_leaves_a_red_panel_saying_where_it_stopped(shell, llm):
    shell.run_line_magic("config", "KuraMagics.panel = 'widgets'")
    shell.user_ns.update(convs=make_conversations(4), Buggy=schema_with_a_bug(fails_on=2))

    with capture_output() as shown, pytest.raises(KeyError, match="a bug in a validator"):
        shell.run_cell_magic("summarise", "convs --schema Buggy --max-concurrency 1", PROMPT)

    ended = final(shown)
    root = live_widgets[shown.outputs[0].data["application/vnd.jupyter.widget-view+json"]["model_id"]]
    assert (root.state, root.running) == ("failed", False), "the live view turned red and stopped ticking"
    assert "stopped at 1/4: KeyError: 'a bug in a validator'" in ended["text/plain"]
    assert "stopped at 1/4: KeyError: &#x27;a bug in a validator&#x27;" in ended["text/html"]
    assert "kura-failed" in ended["text/html"]
    assert re.search(r'<div style="color:#e53935"><span class="kura-status">stopped at 1/4', ended["text/html"])
    assert km.cache_info().for_experiment("default").entries == 1, "the finished row is cached"


def test_without_a_widget_front_end_the_panel_is_plain_text(shell, llm, capsys):
    shell.user_ns["convs"] = make_conversations(3)
    assert not widgets_available()

    shell.run_cell_magic("summarise", "convs", PROMPT)
    printed = capsys.readouterr().out

    assert "3/3 done · 3 fresh · 0 cached · 0 errors" in printed
    assert "spent $" in printed and "saved $0.00" in printed
    assert "cache at the end of this run: default: 3 entries" in printed
    for widget_repr in ("VBox", "Label(", "IntProgress", "Button", "model_id"):
        assert widget_repr not in printed


def test_kura_alone_in_text_mode_prints_the_cache_lines(shell, llm):
    km.summarise(make_conversations(2), PROMPT, experiment="v2")

    with capture_output() as shown:
        shell.run_cell("%kura")

    assert f"default: 0 entries, 0 B · cache: 2 entries, {size(km.cache_info().bytes)}" in shown.stdout
    assert "experiments: v2 (2)" in shown.stdout
    assert "VBox" not in shown.stdout


def test_a_rerun_of_the_same_out_says_what_changed_in_the_text_panel(shell, llm):
    shell.run_line_magic("config", "KuraMagics.panel = 'text'")
    conversations = make_conversations(3)
    shell.user_ns["convs"] = conversations
    first = shell.run_cell_magic("summarise", "convs --out s", PROMPT)
    shell.user_ns["convs"] = conversations + make_conversations(1, prefix="new", text="refund")

    with capture_output() as shown:
        shell.run_cell_magic("summarise", "convs --out s", PROMPT.replace("one line", "two short lines"))

    lines = shown.outputs[0].data["text/plain"].splitlines()
    assert f"since run {first.run_id}: prompt changed (3 words) · 4 fresh · 0 unchanged answers reused" in lines


def test_the_widget_panel_shows_what_changed_since_the_last_run(shell, llm):
    shell.run_line_magic("config", "KuraMagics.panel = 'widgets'")
    shell.user_ns["convs"] = make_conversations(3)
    shell.run_cell_magic("summarise", "convs --out s", PROMPT)
    shell.user_ns["convs"] = make_conversations(5)

    with capture_output() as shown:
        second = shell.run_cell_magic("summarise", "convs --out s", PROMPT)

    root = live_widgets[shown.outputs[0].data["application/vnd.jupyter.widget-view+json"]["model_id"]]
    assert root.texts["kura-changes"] == second.changes
    assert second.changes.endswith("nothing changed · 2 fresh · 3 unchanged answers reused")


@pytest.mark.parametrize("columns", [60, 200])
def test_the_terminal_table_uses_the_terminals_width(monkeypatch, columns):
    from kura_magic.views.text import results_text

    long = "The customer wrote at length about a refund that never arrived " * 2  # 128 characters
    run = km.SummaryRun([km.SummaryResult(conversation_id="c0", summary=long)], km.RunStats(), model="m",
                        experiment="e")
    monkeypatch.setenv("COLUMNS", str(columns))

    lines = results_text(run).splitlines()

    assert len(lines[1]) <= columns
    assert (long.strip() in lines[1]) == (columns == 200), "cut to a narrow terminal, whole in a wide one"


def test_the_time_left_is_whole_seconds():
    texts = run_texts(km.RunStats(total=10, done=3, phase=km.RunStats.CALLING, in_flight=2), 0.45, going=True)
    assert texts["kura-eta"] == "ETA 16 s"
