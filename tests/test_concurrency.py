"""How many calls a run has in flight, as the server sees them, and what a run shows while
it waits: its own `max_concurrency`, the process-wide default shared by runs that name none,
and the "loading the provider library…" state of a new process's first fresh run."""

from __future__ import annotations

import asyncio
import json

import pytest

import kura_magic as km
from helpers import API_KEY, MODEL, PROMPT, make_conversations, race_two_processes
from test_process import run_python

pytestmark = pytest.mark.usefixtures("backend")  # each test runs on disk and on Redis


def test_a_runs_own_max_concurrency_is_what_the_server_sees(llm):
    llm.latency_s = 0.5  # long enough for all 50 to be sent on a loaded 2-core machine (0.2 s saw 47)

    run = km.summarise(make_conversations(150), PROMPT, max_concurrency=50)

    assert run.stats.fresh == 150
    assert llm.peak_in_flight == 50, "the process-wide default (20) is not a cap on a run's own limit"


def test_a_run_without_a_limit_gets_the_process_wide_default(llm):
    llm.latency_s = 0.2

    km.summarise(make_conversations(60), PROMPT)

    assert llm.peak_in_flight == km.config.settings().max_concurrency == 20


def test_runs_with_their_own_limits_each_get_theirs(llm):
    llm.latency_s = 0.2

    async def both() -> list[km.SummaryRun]:
        return await asyncio.gather(
            km.asummarise(make_conversations(30, prefix="a", text="first run"), PROMPT, max_concurrency=5),
            km.asummarise(make_conversations(30, prefix="b", text="second run"), PROMPT, max_concurrency=7),
        )

    runs = asyncio.run(both())

    assert [run.stats.fresh for run in runs] == [30, 30]
    assert llm.peak_in_flight == 12


def test_runs_and_completions_without_limits_share_the_process_wide_one(llm, monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_MAX_CONCURRENCY", "6")
    llm.latency_s = 0.2

    async def together() -> list[object]:
        return await asyncio.gather(
            km.asummarise(make_conversations(20, prefix="a", text="first run"), PROMPT),
            km.asummarise(make_conversations(20, prefix="b", text="second run"), PROMPT),
            *(km.acomplete(f"question {i}") for i in range(10)),
        )

    results = asyncio.run(together())

    assert llm.request_count == 50
    assert [run.stats.fresh for run in results[:2]] == [20, 20]
    assert llm.peak_in_flight == 6


def test_the_stats_show_the_calls_in_flight_while_they_are_out(llm):
    llm.latency_s = 0.1
    seen: list[tuple[str, int, str]] = []

    def on_progress(stats: km.RunStats) -> None:
        seen.append((stats.phase, stats.in_flight, stats.texts()["kura-done"]))

    run = km.summarise(make_conversations(12), PROMPT, max_concurrency=4, on_progress=on_progress)

    assert ("calling", 0, "0/12 done · calling") in seen, "the calls' start is reported at once"
    assert any(phase == "calling" and 1 <= n <= 3 and f"{n} in flight" in text for phase, n, text in seen)
    assert (run.stats.phase, run.stats.in_flight) == ("", 0)
    assert run.stats.texts()["kura-done"] == "12/12 done"


FIRST_RUN = f"""
    import json, os, sys
    import kura_magic
    from kura_magic.testing import LoopbackLLM
    convs = [{{"chat_id": f"c{{i}}", "messages": [{{"role": "user", "content": f"q {{i}}"}}]}}
             for i in range(3)]
    reports = []
    def on_progress(stats):
        litellm = sys.modules.get("litellm")  # while it imports, its names are not there yet
        reports.append([stats.done, stats.phase, hasattr(litellm, "acompletion"), stats.in_flight])
    with LoopbackLLM() as server:
        os.environ.update(OPENAI_API_BASE=server.url, OPENAI_API_KEY="{API_KEY}")
        kura_magic.summarise(convs[:2], "{{{{ transcript }}}}", model="{MODEL}", on_progress=on_progress)
        print(json.dumps(reports))
"""


def test_a_new_processs_first_fresh_run_shows_the_library_loading_at_once(llm):
    reports = json.loads(run_python(FIRST_RUN))

    assert reports[0] == [0, "", False, 0], "the cache is read without litellm"
    assert reports[1] == [0, "loading the provider library…", False, 0], "shown before the import ends"
    assert reports[2] == [0, "calling", True, 0]
    assert reports[3] == [0, "calling", True, 2], "the calls out are shown before any answer"
    assert [done for done, *_ in reports[4:-1]] == [1, 2]
    assert reports[-1] == [2, "", True, 0], "the finished run waits on nothing"


def test_two_processes_working_in_opposite_orders_share_the_calls_and_both_finish(llm, tmp_path):
    """Each claims the leases of its next calls ahead; neither may end up waiting for a lease
    the other holds while the other waits for one of its own."""
    llm.latency_s = 0.05
    results = race_two_processes(tmp_path, count=120, mine='rows if name == "a" else rows[::-1]',
                                 options=", max_concurrency=4")

    assert llm.request_count == 120, "each call made by one process only"
    assert sum(fresh for fresh, _, _ in results) == 120
    assert [fresh + cached for fresh, cached, _ in results] == [120, 120]
    assert [errors for _, _, errors in results] == [0, 0]
