"""Stop means stop: Kernel › Interrupt during a `%%summarise` under "Run All" shows the
partial run, binds it, and still reaches Jupyter, so the cells queued after it never run
and the provider gets no further calls. Driven through a real ipykernel, as Jupyter does."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from jupyter_client.manager import KernelManager

from helpers import API_KEY, MODEL

pytestmark = pytest.mark.slow

SETUP = """\
%load_ext kura_magic
convs = [{"chat_id": f"c{i}", "messages": [{"role": "user", "content": f"question {i}"}]} for i in range(40)]
later = [{"chat_id": f"d{i}", "messages": [{"role": "user", "content": f"other {i}"}]} for i in range(5)]
"""
LONG_RUN = "%%summarise convs --max-concurrency 2\nSummarise: {{ transcript }}"
NEXT_RUN = "%%summarise later --out next_run\nSummarise: {{ transcript }}"


@pytest.fixture
def kernel(llm, tmp_path) -> Iterator[tuple[KernelManager, object]]:
    """A real IPython kernel whose calls go to the loopback server, caching under tmp_path."""
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env={
        **os.environ, "OPENAI_API_BASE": llm.url, "OPENAI_API_KEY": API_KEY, "KURA_MAGIC_MODEL": MODEL,
        "KURA_MAGIC_CACHE": str(tmp_path / "cache"), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    })
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    try:
        yield manager, client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def reply(client, msg_id: str, timeout: float = 60) -> dict:
    """The execute_reply of `msg_id`."""
    while True:
        message = client.get_shell_msg(timeout=timeout)
        if message["parent_header"].get("msg_id") == msg_id:
            return message["content"]


def outputs(client, msg_id: str) -> list[dict]:
    """Every iopub message `msg_id` produced, until the kernel went idle after it."""
    found = []
    while True:
        message = client.get_iopub_msg(timeout=30)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            return found
        found.append(message)


def test_an_interrupt_under_run_all_stops_the_queue_and_spends_nothing_more(kernel, llm):
    manager, client = kernel
    assert reply(client, client.execute(SETUP))["status"] == "ok"
    llm.latency_s = 0.3
    long_run, next_run = client.execute(LONG_RUN), client.execute(NEXT_RUN)  # as "Run All" queues them
    deadline = time.monotonic() + 60
    while llm.request_count < 4 and time.monotonic() < deadline:
        time.sleep(0.05)

    manager.interrupt_kernel()
    first, second = reply(client, long_run), reply(client, next_run)
    sent = llm.request_count
    time.sleep(1.0)

    assert first["status"] == "error" and first["ename"] == "RunInterrupted"
    assert first["traceback"][0].startswith("■ interrupted: ") and "bound to summaries" in first["traceback"][0]
    assert second["status"] == "aborted", "the next queued cell never ran"
    assert llm.request_count == sent < 40, "no call was made after the interrupt"
    shown = [m["content"]["data"]["text/plain"] for m in outputs(client, long_run) if m["msg_type"] == "display_data"]
    assert any("interrupted" in text for text in shown), "the partial run is shown"
    check = client.execute("print(summaries.stats.interrupted, 0 < summaries.stats.done < 40, 'next_run' in dir())")
    assert reply(client, check)["status"] == "ok"
    printed = [m["content"]["text"] for m in outputs(client, check) if m["msg_type"] == "stream"]
    assert printed == ["True True False\n"]
