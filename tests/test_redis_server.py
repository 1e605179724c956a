"""The Redis launcher (`kura_magic.testing.RedisServer`), checked with plain sockets and RESP.

Skipped only where redis-server is missing and KURA_REDIS_REQUIRE is unset (see
`helpers.requires_redis`); install it with `bash scripts/install_redis.sh`."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator

import pytest

from helpers import requires_redis
from kura_magic.testing import RedisServer


def command(port: int, *commands: tuple[str, ...]) -> list[object]:
    """Send `commands` on one connection; their replies (str, int, None, list, or 'ERR...' errors)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn, conn.makefile("rb") as replies:
        for args in commands:
            parts = [f"*{len(args)}\r\n".encode()]
            for arg in args:
                parts.append(f"${len(arg.encode())}\r\n{arg}\r\n".encode())
            conn.sendall(b"".join(parts))
        return [read_reply(replies) for _ in commands]


def read_reply(replies) -> object:
    """One RESP2 reply: +simple and -error as str (errors keep their '-'), :int, $bulk, *array."""
    line = replies.readline().rstrip(b"\r\n").decode()
    kind, rest = line[:1], line[1:]
    if kind in "+-":
        return line if kind == "-" else rest
    if kind == ":":
        return int(rest)
    if int(rest) < 0:
        return None
    if kind == "$":
        return replies.read(int(rest) + 2)[:-2].decode()
    return [read_reply(replies) for _ in range(int(rest))]


def refused(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@requires_redis
def test_it_starts_on_a_free_loopback_port_and_answers_ping(redis):
    assert redis.running and redis.pid is not None
    os.kill(redis.pid, 0)  # the process exists
    assert redis.url == f"redis://127.0.0.1:{redis.port}/0"
    assert re.fullmatch(r"redis://127\.0\.0\.1:\d+/0", redis.url)
    assert command(redis.port, ("PING",)) == ["PONG"]
    assert command(redis.port, ("SET", "k", "v"), ("GET", "k")) == ["OK", "v"]


@requires_redis
def test_it_is_private_and_persists_nothing(redis):
    replies = command(redis.port, ("CONFIG", "GET", "dir"), ("CONFIG", "GET", "save"),
                      ("CONFIG", "GET", "appendonly"), ("CONFIG", "GET", "bind"),
                      ("CONFIG", "GET", "protected-mode"))
    assert replies[0] == ["dir", str(redis.directory)]
    assert replies[1:] == [["save", ""], ["appendonly", "no"], ["bind", "127.0.0.1"],
                           ["protected-mode", "yes"]]


@requires_redis
def test_two_servers_get_two_ports():
    with RedisServer() as first, RedisServer() as second:
        assert first.port != second.port
        command(first.port, ("SET", "k", "first"))
        assert command(second.port, ("GET", "k")) == [None]


@requires_redis
def test_stop_ends_the_process_frees_the_port_and_removes_the_directory():
    server = RedisServer().start()
    port, pid, directory = server.port, server.pid, server.directory
    server.stop()
    assert not server.running and server.pid is None
    assert not directory.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # free again
    server.stop()  # twice is harmless


@requires_redis
def test_kill_makes_it_unreachable_at_the_same_url_and_start_brings_it_back_empty(redis):
    url, port = redis.url, redis.port
    command(port, ("SET", "k", "v"))
    redis.kill()
    assert not redis.running and redis.pid is None
    assert redis.url == url and refused(port)
    redis.start()
    assert redis.url == url
    assert command(port, ("PING",), ("GET", "k")) == ["PONG", None]  # nothing was saved


@requires_redis
def test_a_password_is_required_and_in_the_url_but_not_on_the_command_line():
    with RedisServer(password="s3cret/pw") as server:
        assert server.url == f"redis://:s3cret%2Fpw@127.0.0.1:{server.port}/0"
        [noauth] = command(server.port, ("PING",))
        assert noauth.startswith("-NOAUTH")
        wrong, still = command(server.port, ("AUTH", "wrong"), ("PING",))
        assert wrong.startswith("-WRONGPASS") and still.startswith("-NOAUTH")
        assert command(server.port, ("AUTH", "s3cret/pw"), ("PING",)) == ["OK", "PONG"]
        with open(f"/proc/{server.pid}/cmdline", "rb") as cmdline:
            assert b"s3cret" not in cmdline.read()


def test_a_missing_binary_says_how_to_install_it():
    with pytest.raises(FileNotFoundError, match=r"apt-get install redis-server.*install_redis\.sh"):
        RedisServer(binary="/nonexistent/redis-server")
