"""The S3 store: a cache in an object store that notebooks on short-lived machines share
(`KURA_MAGIC_CACHE=s3://bucket/prefix`; AWS S3, or any S3-compatible store named by
`KURA_MAGIC_S3_ENDPOINT`).

Same behaviour as the disk and Redis stores: entries scoped by experiment, JSON (or raw
float32) bytes and never pickle, per-experiment sizes, leases so that a call in flight
anywhere is made once. An object is `{prefix}/{scope}/{experiment}/{key}` (names
percent-encoded); an age limit is stored with it (`x-amz-meta-kura-expires`) and checked
on read, and `prune()` deletes what has expired (a bucket lifecycle rule on the prefix
does it for free). Credentials, region and endpoint come from the usual AWS variables and
files (boto3's lookup); they are never shown. The client is obstore (Rust): many keys are
fetched at once from a thread pool, its calls run outside the GIL. A store that cannot be
reached is a warning and runs without the cache, tried again after a pause; refused
credentials or a missing bucket are a `CacheError` at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

from kura_magic.config import mask_url
from kura_magic.errors import CacheError, CacheWarning
from kura_magic.storage.base import (
    BATCH,
    STORAGE_TIMEOUT_S,
    Pruned,
    Store,
    StoreScope,
    chunks,
    warn_storage,
)
from kura_magic.types import ExperimentInfo, StoreInfo

try:
    import obstore
    from obstore.exceptions import (
        AlreadyExistsError,
        BaseError,
        PermissionDeniedError,
        PreconditionError,
        UnauthenticatedError,
    )
except ImportError as exc:  # an optional dependency: only this store needs it
    raise CacheError("KURA_MAGIC_CACHE=s3://... needs obstore: pip install obstore") from exc

if TYPE_CHECKING:
    from obstore.store import S3Config  # types only: not importable at run time

T = TypeVar("T")
RETRY_AFTER_S = 30.0  # how long a store that lost its server waits before trying again
WORKERS = 32  # requests in flight at once (measured: 1,000 GETs in about 0.5 s on loopback)
EXPIRES = "kura-expires"  # user metadata: when the entry stops being served (Unix seconds)
LEASES = "leases"
TROUBLE = (BaseError, OSError)  # obstore's errors, and the builtin ones it raises (FileNotFoundError)
REFUSED = (PermissionDeniedError, UnauthenticatedError)


class S3Store(Store):
    """Entries in an S3 bucket under `{prefix}/{scope}/{experiment}/{key}`.

    Example:
        >>> from kura_magic.testing.seaweed import SeaweedFS
        >>> with SeaweedFS() as server:  # doctest: +SKIP
        ...     store = S3Store(server.url("demo"), endpoint=server.endpoint)
        ...     store.write_bytes("k", b"hi", experiment="a")
        True
    """

    kind = "s3"

    def __init__(self, url: str, *, scope: StoreScope = "responses", ttl_s: float | None = None,
                 endpoint: str | None = None) -> None:
        bucket, prefix = parse_s3_url(url)
        self.endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self.url = mask_url(url)
        self.ttl_s = ttl_s
        self._scope = f"{scope}/"
        _check_endpoint(self.endpoint)
        try:
            self._client = _client(bucket, prefix, self.endpoint)
        except (*TROUBLE, ValueError) as exc:  # a setting the client cannot use
            raise CacheError(f"the S3 cache {self.location} cannot be used: {_short(exc)}") from None
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="kura-s3")
        self.down: str | None = None
        self._retry_at = 0.0
        self._leases_work: bool | None = None  # does the store honour conditional writes? (probed once)
        _check_access(self._client, self.location, self._went_down)

    @property
    def location(self) -> str:
        where = f" at {mask_url(self.endpoint)}" if self.endpoint else ""
        return f"{self.url}{where}"

    def __repr__(self) -> str:
        return f"S3Store({self.location!r}, scope={self._scope.rstrip('/')!r})"

    # the plumbing every operation shares
    def _path(self, key: str, experiment: str) -> str:
        return f"{self._scope}{quote(experiment, safe='')}/{quote(key, safe='')}"

    def _attempt(self, action: str, key: str, work: Callable[[], T], default: T) -> T:
        """One operation; a store that cannot be reached is one warning, then `default` until
        RETRY_AFTER_S has passed; any other storage error is a warning and `default`."""
        if self.down is not None and time.monotonic() < self._retry_at:
            return default
        try:
            result = work()
        except TROUBLE as exc:
            if _unreachable(exc):
                self._went_down(exc)
            else:
                warn_storage(action, key, type(exc)(_short(exc)))
            return default
        self.down = None
        return result

    def _went_down(self, exc: BaseException) -> None:
        if self.down is None:
            self.down = (f"the S3 cache {self.location} cannot be reached ({_short(exc)}); runs go "
                         f"on without it and try it again after {RETRY_AFTER_S:g} s")
            _warn_once_per_outage(self.location, self.down)
        self._retry_at = time.monotonic() + RETRY_AFTER_S

    def _each(self, work: Callable[[str], T], items: Sequence[str]) -> list[T]:
        """`work` on every item, WORKERS at a time; the first failure is raised."""
        return list(self._pool.map(work, items))

    def _get(self, path: str) -> bytes | None:
        """The object's bytes, or None if it is absent or has expired."""
        try:
            found = obstore.get(self._client, path)
        except FileNotFoundError:
            return None
        return None if _expired(found.attributes) else bytes(found.bytes())

    def _list(self, prefix: str) -> list[tuple[str, int]]:
        """(path, size) of every object under `prefix`."""
        return [(meta["path"], meta["size"])
                for chunk in obstore.list(self._client, prefix, chunk_size=BATCH) for meta in chunk]

    # entries
    def read_bytes(self, key: str, *, experiment: str) -> bytes | None:
        return self._attempt("read", key, lambda: self._get(self._path(key, experiment)), None)

    def read_many(self, keys: Sequence[str], *, experiment: str) -> dict[str, bytes]:
        """Every key fetched at once, WORKERS requests in flight; a failure makes the rest misses."""
        paths = [self._path(key, experiment) for key in keys]
        none: list[bytes | None] = []
        values = self._attempt("read", keys[0] if keys else "", lambda: self._each(self._get, paths), none)
        return {key: value for key, value in zip(keys, values) if value is not None}

    def write_bytes(self, key: str, data: bytes, *, experiment: str) -> bool:
        return self.write_many({key: data}, experiment=experiment) == 1

    def write_many(self, items: Mapping[str, bytes], *, experiment: str) -> int:
        """Every item written at once, WORKERS requests in flight; returns how many were kept."""
        attributes = self._attributes()

        def put(key: str) -> bool:
            obstore.put(self._client, self._path(key, experiment), items[key], attributes=attributes)
            return True

        keys, none = list(items), [False]
        return sum(self._attempt("write", keys[0] if keys else "", lambda: self._each(put, keys), none))

    def _attributes(self) -> dict[str, str]:
        return {} if self.ttl_s is None else {EXPIRES: f"{time.time() + self.ttl_s:.3f}"}

    def delete(self, key: str, *, experiment: str) -> None:
        self._attempt("delete", key, lambda: obstore.delete(self._client, self._path(key, experiment)), None)

    def _listed(self, experiment: str | None = None) -> Iterator[tuple[str, str, int]]:
        """(experiment, key, size) of every entry of this scope (of one experiment)."""
        prefix = self._scope if experiment is None else f"{self._scope}{quote(experiment, safe='')}/"
        none: list[tuple[str, int]] = []
        for path, size in self._attempt("list", experiment or "(all)", lambda: self._list(prefix), none):
            name, _, key = path[len(self._scope):].partition("/")
            yield unquote(name), unquote(key), size

    def keys(self, *, experiment: str) -> list[str]:
        return [key for _, key, _ in self._listed(experiment)]

    def clear(self, experiment: str | None = None) -> int:
        paths = [self._path(key, name) for name, key, _ in self._listed(experiment)]
        self._delete_paths(paths)
        return len(paths)

    def _delete_paths(self, paths: Sequence[str]) -> None:
        """Delete `paths`, a bulk request per BATCH."""
        for batch in chunks(paths, BATCH):
            self._attempt("clear", batch[0], partial(obstore.delete, self._client, list(batch)), None)

    def prune(self) -> Pruned:
        """Delete the entries whose age limit has passed: one LIST per BATCH objects, then a
        HEAD-like GET of each (the limit is in its metadata), WORKERS at a time."""
        listed = [(self._path(key, name), size) for name, key, size in self._listed()]

        def expired(path: str) -> bool:
            try:
                return _expired(obstore.get(self._client, path, options={"head": True}).attributes)
            except FileNotFoundError:
                return False

        none: list[bool] = []
        flags = self._attempt("prune", "(all)", lambda: self._each(expired, [p for p, _ in listed]), none)
        doomed = [(path, size) for (path, size), flag in zip(listed, flags) if flag]
        self._delete_paths([path for path, _ in doomed])
        return Pruned(entries=len(doomed), bytes=sum(size for _, size in doomed))

    def info(self) -> StoreInfo:
        experiments: dict[str, ExperimentInfo] = {}
        for name, _, size in self._listed():
            counts = experiments.setdefault(name, ExperimentInfo())
            counts.entries += 1
            counts.bytes += size
        return StoreInfo(
            entries=sum(e.entries for e in experiments.values()),
            bytes=sum(e.bytes for e in experiments.values()),
            experiments=experiments, url=self.location, problem=self.down,
        )

    # leases: a conditional create of `leases/{experiment}/{key}`, holding a token and an expiry
    def _lease_path(self, key: str, experiment: str) -> str:
        return f"{LEASES}/{quote(experiment, safe='')}/{quote(key, safe='')}"

    def claim_many(self, keys: Sequence[str], *, experiment: str, token: str, ttl_s: float) -> frozenset[str]:
        """Each key's lease created only if absent (`If-None-Match: *`) or taken over if expired
        (`If-Match` its ETag), WORKERS at a time; a store that is down: every key (no one to
        coordinate with)."""
        if not keys or not self._conditional_writes():
            return frozenset(keys)
        body = _lease_body(token, ttl_s)

        def claim(key: str) -> bool:
            return _claim(self._client, self._lease_path(key, experiment), body)

        claimed: list[bool] | None = self._attempt("claim", keys[0], lambda: self._each(claim, list(keys)), None)
        if claimed is None:
            return frozenset(keys)
        return frozenset(key for key, done in zip(keys, claimed) if done)

    def renew(self, claims: Mapping[str, str], *, experiment: str, ttl_s: float) -> None:
        def renew(key: str) -> None:
            path, body = self._lease_path(key, experiment), _lease_body(claims[key], ttl_s)
            found = _lease(self._client, path)
            if found is not None and found[0].get("token") == claims[key]:
                _put_if(self._client, path, body, found[1])

        self._on_leases("lease", renew, claims)

    def release(self, claims: Mapping[str, str], *, experiment: str) -> None:
        """Delete each lease still holding its token. (S3 has no delete-if-match everywhere:
        the check and the delete are two requests, which is safe while the lease is renewed.)"""
        def release(key: str) -> None:
            path = self._lease_path(key, experiment)
            found = _lease(self._client, path)
            if found is not None and found[0].get("token") == claims[key]:
                obstore.delete(self._client, path)

        self._on_leases("lease", release, claims)

    def _on_leases(self, action: str, work: Callable[[str], None], claims: Mapping[str, str]) -> None:
        if claims and self._leases_work:
            keys = list(claims)
            self._attempt(action, keys[0], lambda: self._each(work, keys), None)

    def calls_in_flight(self) -> int:
        """Unexpired leases, from every process and machine sharing the prefix."""
        def live(path: str) -> bool:
            found = _lease(self._client, path)
            return found is not None and float(found[0].get("expires", 0)) > time.time()

        listed: list[tuple[str, int]] = []
        paths = [path for path, _ in self._attempt("lease count", "(all)", lambda: self._list(f"{LEASES}/"), listed)]
        return sum(self._attempt("lease count", "(all)", lambda: self._each(live, paths), [False]))

    def _conditional_writes(self) -> bool:
        """Whether the store honours `If-None-Match: *`: probed once by creating one object
        twice; if not, one warning and no leases (two processes may make the same call)."""
        if self._leases_work is None:
            works = self._attempt("lease probe", "(probe)", lambda: _honours_create(self._client), None)
            if works is None:
                return False  # down: try again next time
            self._leases_work = works
            if not works and self.location not in _refusals_told:  # once, whichever scope finds it
                _refusals_told.add(self.location)
                warnings.warn(f"the S3 cache {self.location} does not honour conditional writes "
                              "(If-None-Match); calls in flight are not shared between processes, "
                              "so two of them may pay for the same call", CacheWarning, stacklevel=4)
        return self._leases_work

    def close(self) -> None:
        self._pool.shutdown(wait=True)


_warned_at: dict[str, float] = {}  # location -> when its outage was last reported
_refusals_told: set[str] = set()  # locations that do not honour conditional writes, said once


def _warn_once_per_outage(location: str, message: str) -> None:
    """One warning per store and outage, however many scopes (responses, runs) see it."""
    now = time.monotonic()
    if now - _warned_at.get(location, -RETRY_AFTER_S) >= RETRY_AFTER_S:
        _warned_at[location] = now
        warnings.warn(message, CacheWarning, stacklevel=6)


def parse_s3_url(url: str) -> tuple[str, str]:
    """The bucket and key prefix of an `s3://bucket/prefix` URL.

    Example:
        >>> parse_s3_url("s3://team-cache/kura/notebooks/")
        ('team-cache', 'kura/notebooks')
    """
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.hostname:
        raise CacheError(f"KURA_MAGIC_CACHE={mask_url(url)!r} is not an S3 URL: write it as s3://bucket/prefix")
    return parts.hostname, parts.path.strip("/")


def _check_endpoint(endpoint: str | None) -> None:
    """A CacheError unless `endpoint` is None or an http(s) URL (the client would panic).

    Example:
        >>> _check_endpoint("http://127.0.0.1:9000")
        >>> _check_endpoint("minio:9000")
        Traceback (most recent call last):
        ...
        kura_magic.errors.CacheError: KURA_MAGIC_S3_ENDPOINT='minio:9000' is not a URL: write it as http(s)://host:port
    """
    if endpoint is None:
        return
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in endpoint):
        raise CacheError(f"KURA_MAGIC_S3_ENDPOINT={mask_url(endpoint)!r} is not a URL: write it as http(s)://host:port")


def _client(bucket: str, prefix: str, endpoint: str | None) -> Any:
    """An obstore client for `bucket`/`prefix`: credentials and region as boto3 finds them
    (variables, ~/.aws files, a profile, an instance role), short timeouts, few retries."""
    import boto3  # type: ignore[import-untyped]
    from obstore.auth.boto3 import Boto3CredentialProvider
    from obstore.store import S3Store as Client

    session = boto3.Session()
    config: S3Config = {"region": session.region_name or "us-east-1"}
    if endpoint:
        config["endpoint"] = endpoint
    provider = Boto3CredentialProvider(session) if session.get_credentials() is not None else None
    return Client(
        bucket, prefix=prefix or None, config=config, credential_provider=provider,
        client_options={"allow_http": bool(endpoint and endpoint.startswith("http://")),
                        "timeout": timedelta(seconds=STORAGE_TIMEOUT_S), "connect_timeout": timedelta(seconds=2),
                        "pool_max_idle_per_host": str(WORKERS)},
        retry_config={"max_retries": 2, "retry_timeout": timedelta(seconds=STORAGE_TIMEOUT_S),
                      "backoff": {"init_backoff": timedelta(milliseconds=50), "max_backoff": timedelta(seconds=1),
                                  "base": 2}},
    )


def _check_access(client: Any, shown: str, went_down: Callable[[BaseException], None]) -> None:
    """List one object: refused credentials or a missing bucket are a CacheError now; a store
    that does not answer is a warning (runs go on without it)."""
    try:
        next(iter(obstore.list(client, None, chunk_size=1)), None)
    except TROUBLE as exc:
        status = _status(exc)
        if status is None:
            went_down(exc)
        elif isinstance(exc, REFUSED) or status in (401, 403):
            raise CacheError(f"the S3 cache {shown} refused the credentials (HTTP {status}). Check "
                             "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials") from None
        elif status == 404:
            raise CacheError(f"the S3 cache {shown}: the bucket does not exist. Create it, or point "
                             "KURA_MAGIC_CACHE at one that does") from None
        else:
            raise CacheError(f"the S3 cache {shown} cannot be used: {_short(exc)}") from None


def _status(exc: BaseException) -> int | None:
    """The HTTP status the store answered with, or None if it did not answer at all."""
    if isinstance(exc, FileNotFoundError):
        return 404
    found = re.search(r"status code: (\d{3})|status: (\d{3})", str(exc))
    return int(found.group(1) or found.group(2)) if found else None


def _unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the store did not answer (rather than refusing one request)."""
    return _status(exc) is None


def _short(exc: BaseException) -> str:
    """The first line of an obstore error (the rest is a debug dump), any password in a URL
    masked.

    Example:
        >>> _short(OSError("GET http://me:pw@host/b failed\\nDebug: ..."))
        'GET http://me:***@host/b failed'
    """
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return re.sub(r"://([^/:@\s]+):[^/@\s]+@", r"://\1:***@", first)


def _expired(attributes: Mapping[str, Any]) -> bool:
    """Whether an object's age limit (its `kura-expires` metadata) has passed."""
    try:
        return float(attributes.get(EXPIRES, "inf")) <= time.time()
    except ValueError:
        return False


def _lease_body(token: str, ttl_s: float) -> bytes:
    return json.dumps({"token": token, "expires": time.time() + ttl_s}).encode()


def _lease(client: Any, path: str) -> tuple[dict[str, Any], str] | None:
    """A lease's content and ETag, or None if there is none (an unreadable one reads as expired)."""
    try:
        found = obstore.get(client, path)
    except FileNotFoundError:
        return None
    try:
        content = json.loads(bytes(found.bytes()))
    except ValueError:
        content = {}
    return (content if isinstance(content, dict) else {}), str(found.meta["e_tag"])


def _put_if(client: Any, path: str, body: bytes, e_tag: str) -> bool:
    """Overwrite `path` only if it is still version `e_tag`; whether it was."""
    try:
        obstore.put(client, path, body, mode={"e_tag": e_tag})
    except PreconditionError:
        return False
    return True


def _claim(client: Any, path: str, body: bytes) -> bool:
    """Create the lease at `path`, or take it over if its holder let it expire."""
    try:
        obstore.put(client, path, body, mode="create")
        return True
    except AlreadyExistsError:
        pass
    found = _lease(client, path)
    if found is None or float(found[0].get("expires", 0)) > time.time():
        return False  # just let go (the next poll claims it), or held
    return _put_if(client, path, body, found[1])


def _honours_create(client: Any) -> bool:
    """Create one probe object twice: True if the second create was refused."""
    path = f"{LEASES}/.probe-{uuid.uuid4().hex}"
    try:
        obstore.put(client, path, b"probe", mode="create")
        obstore.put(client, path, b"probe", mode="create")
    except AlreadyExistsError:
        return True
    except TROUBLE as exc:  # refused (501 Not Implemented, 400 ...), unless nothing answered
        if _unreachable(exc):
            raise
        return False
    finally:
        with contextlib.suppress(*TROUBLE):
            obstore.delete(client, path)
    return False
