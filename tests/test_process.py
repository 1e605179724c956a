"""What only a fresh process shows: imports, Ctrl-C during a run, and time-outs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import kura_magic as km
from kura_magic.calls.gateway import backoff_delay
from kura_magic.calls.provider_errors import classify
from helpers import API_KEY, MODEL, make_conversations


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]




def test_a_fully_cached_run_never_imports_litellm(llm):
    conversations = make_conversations(5)
    km.summarise(conversations, "Summarise:\n{{ transcript }}")
    requests_before = llm.request_count

    loaded = run_python(
        f"""
        import sys, json, kura_magic
        run = kura_magic.summarise({conversations!r}, "Summarise:\\n{{{{ transcript }}}}")
        print(json.dumps([run.stats.cached, "litellm" in sys.modules]))
        """
    )

    assert json.loads(loaded) == [5, False]
    assert llm.request_count == requests_before


def test_ctrl_c_returns_the_partial_run_and_keeps_what_finished(tmp_path):
    script = f"""
        import json, os, signal
        import kura_magic
        from kura_magic.testing import LoopbackLLM
        convs = [{{"chat_id": f"c{{i}}", "messages": [{{"role": "user", "content": f"q {{i}}"}}]}}
                 for i in range(40)]
        with LoopbackLLM(latency_s=0.2) as server:
            os.environ.update(OPENAI_API_BASE=server.url, OPENAI_API_KEY="{API_KEY}")
            pressed = []
            def press_ctrl_c(stats):  # once, as a person would, when a few rows are done
                if stats.fresh >= 3 and not pressed:
                    pressed.append(True)
                    os.kill(os.getpid(), signal.SIGINT)
            run = kura_magic.summarise(convs, "{{{{ transcript }}}}", model="{MODEL}",
                                       max_concurrency=2, on_progress=press_ctrl_c)
            sent = server.request_count
            again = kura_magic.summarise(convs, "{{{{ transcript }}}}", model="{MODEL}")
        statuses = [r.status for r in run]
        print(json.dumps(dict(done=statuses.count("ok"), unfinished=statuses.count("unfinished"),
                              interrupted=run.stats.interrupted, sent=sent,
                              cached_after=again.stats.cached)))
    """
    report = json.loads(run_python(script, env={"KURA_MAGIC_CACHE": str(tmp_path / "c")}))

    assert report["interrupted"] is True
    assert 3 <= report["done"] < 40
    assert report["sent"] < 40
    assert report["done"] + report["unfinished"] == 40
    assert report["cached_after"] >= report["done"], "every finished call is in the cache"


def test_a_hanging_provider_times_out_and_is_not_cached(llm, monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_TIMEOUT", "0.5")
    monkeypatch.setenv("KURA_MAGIC_MAX_RETRIES", "1")
    llm.hang_next(2, seconds=5)

    run = km.summarise(make_conversations(1), "{{ transcript }}")

    assert run[0].status == "error" and "timeout" in run[0].error
    assert km.summarise(make_conversations(1), "{{ transcript }}").stats.fresh == 1


def test_retry_after_is_honoured_over_exponential_backoff():
    assert backoff_delay(3, base_s=0.5, retry_after_s=1.25) == 1.25
    assert backoff_delay(1, base_s=0.5, retry_after_s=None) <= 1.0
    assert backoff_delay(20, base_s=0.5, retry_after_s=None) <= 60


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("RateLimitError", "transient"),
        ("Timeout", "transient"),
        ("InternalServerError", "transient"),
        ("ContentPolicyViolationError", "deterministic"),
        ("ContextWindowExceededError", "deterministic"),
        ("AuthenticationError", "fatal"),
        ("NotFoundError", "fatal"),
    ],
)
def test_litellm_errors_are_sorted_by_what_to_do(name, kind):
    import litellm

    exc_class = getattr(litellm, name)
    try:
        exc = exc_class(message="boom sk-abcdef123456", model="m", llm_provider="openai")
    except TypeError:
        exc = exc_class(message="boom sk-abcdef123456", model="m", llm_provider="openai", response=None)
    failure = classify(exc)
    assert failure.kind == kind
    assert "abcdef123456" not in failure.message


def test_context_too_long_is_cached_as_an_error(llm):
    conversations = make_conversations(2)
    conversations[0]["messages"][0]["content"] += " [[too-long]]"
    first = km.summarise(conversations, "{{ transcript }}")
    assert "context_window" in first[0].error
    second = km.summarise(conversations, "{{ transcript }}")
    assert second.stats.cached == 2 and llm.request_count == 2
