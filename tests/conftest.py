"""Fixtures of the test suite: `llm` is the loopback OpenAI-compatible server that litellm
talks to over real HTTP; `shell` is IPython with the extension loaded. (Cache isolation
is the repository's root conftest, so doctests get it too.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from helpers import API_KEY, MODEL, redis_skip_reason, s3_skip_reason
from IPython.core.interactiveshell import InteractiveShell

from kura_magic.testing import LoopbackLLM, RedisServer
from kura_magic.testing.seaweed import SeaweedFS

BACKENDS = ("disk", "redis", "s3")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that uses `backend` runs against the disk store, a real Redis and a real S3
    server, unless it is marked `disk_only` (it looks at files)."""
    if "backend" in metafunc.fixturenames:
        disk_only = metafunc.definition.get_closest_marker("disk_only") is not None
        metafunc.parametrize("backend", ["disk"] if disk_only else BACKENDS, indirect=True)


@pytest.fixture(scope="session")
def llm_server() -> Iterator[LoopbackLLM]:
    with LoopbackLLM() as server:
        yield server


@pytest.fixture
def llm(llm_server: LoopbackLLM, monkeypatch) -> LoopbackLLM:
    """The loopback server, reset, configured the way a user would: environment variables."""
    llm_server.reset()
    llm_server.latency_s = 0.0
    monkeypatch.setenv("OPENAI_API_BASE", llm_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("KURA_MAGIC_MODEL", MODEL)
    return llm_server


@pytest.fixture
def shell() -> Iterator[InteractiveShell]:
    """IPython with the extension loaded; the namespace and the panel mode are reset after."""
    ip = InteractiveShell.instance()
    ip.extension_manager.load_extension("kura_magic")
    yield ip
    ip.run_line_magic("config", "KuraMagics.panel = 'auto'")
    ip.reset(new_session=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, for the whole session."""
    reason = redis_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_cache(redis_server: RedisServer, monkeypatch) -> str:
    """Point the cache at the Redis server, under a key prefix of this test's own."""
    monkeypatch.setenv("KURA_MAGIC_CACHE", redis_server.url)
    monkeypatch.setenv("KURA_MAGIC_REDIS_PREFIX", f"test-{uuid.uuid4().hex[:12]}")
    return redis_server.url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedFS]:
    """A real S3-compatible server (SeaweedFS) on free loopback ports, for the whole session."""
    reason = s3_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with SeaweedFS() as server:
        yield server


@pytest.fixture
def s3_cache(s3_server: SeaweedFS, monkeypatch) -> str:
    """Point the cache at the S3 server's bucket, under a key prefix of this test's own."""
    for variable, value in s3_server.environment().items():
        monkeypatch.setenv(variable, value)
    url = s3_server.url(f"test-{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("KURA_MAGIC_CACHE", url)
    return url


@pytest.fixture
def backend(request) -> str:
    """The store this run of the test uses: 'disk' (the isolated directory), 'redis' or 's3'."""
    if request.param != "disk":
        request.getfixturevalue(f"{request.param}_cache")
    return request.param
