"""OpenAI's Files and Batch APIs on the loopback LLM: upload a JSONL of requests
(``POST /v1/files``, multipart), create a batch of it (``POST /v1/batches``), poll it
(``GET /v1/batches/{id}``), cancel it (``POST /v1/batches/{id}/cancel``) and download its
output and error files (``GET /v1/files/{id}/content``), with the objects shaped as
OpenAI sends them.

A batch is ``validating`` for its first tenth of ``delay_s``, ``in_progress`` (its request
counts rising) until ``delay_s`` has passed, then ``completed``: each line is answered then
by the same code that answers a chat or embeddings request, so markers such as
``[[refuse]]`` fail a line (into the error file) as they would fail a call. ``expire()``
ends a batch as the 24-hour window would, with the unfinished lines in the error file.

Standard library only.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kura_magic.testing.replies import Reply, error

__all__ = ["BatchDesk"]

Answer = Callable[[str, dict[str, Any]], Reply]  # (endpoint, request body) -> the reply
_BATCH_ROUTE = re.compile(r"^/batches/(?P<id>[\w-]+)(?P<cancel>/cancel)?$")
_FILE_ROUTE = re.compile(r"^/files/(?P<id>[\w-]+)(?P<content>/content)?$")
VALIDATING_SHARE = 0.1  # of the delay, before a batch is in progress


@dataclass
class _File:
    id: str
    data: bytes
    filename: str
    purpose: str
    created_at: int = field(default_factory=lambda: int(time.time()))

    def body(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed"}


@dataclass
class _Batch:
    id: str
    endpoint: str
    input_file_id: str
    lines: list[dict[str, Any]]
    metadata: dict[str, Any] | None
    created: float = field(default_factory=time.time)
    ended: str | None = None  # completed, cancelled or expired, once it is
    ended_at: float | None = None
    finished: int = 0  # lines answered, once it has ended
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None


class BatchDesk:
    """The Files and Batch APIs of one loopback server; `answer` answers one line.

    Example:
        >>> desk = BatchDesk(lambda endpoint, body: Reply(200, {"ok": True}))
        >>> desk.respond("GET", "/batches/none", {}, b"").status
        404
    """

    def __init__(self, answer: Answer, *, delay_s: float = 0.0) -> None:
        self.answer = answer
        self.delay_s = delay_s
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._batches: dict[str, _Batch] = {}

    def handles(self, route: str) -> bool:
        """True for the routes this desk answers."""
        return route.startswith(("/files", "/batches"))

    def respond(self, method: str, route: str, headers: dict[str, str], raw: bytes) -> Reply:
        """The reply to one request to a Files or Batch route."""
        with self._lock:
            if (method, route) == ("POST", "/files"):
                return self._upload(headers.get("content-type", ""), raw)
            if (method, route) == ("POST", "/batches"):
                return self._create(raw)
            if (method, route) == ("GET", "/batches"):
                return Reply(200, {"object": "list", "data": [self._body(b) for b in self._batches.values()]})
            batch, file = _BATCH_ROUTE.match(route), _FILE_ROUTE.match(route)
            if batch and batch["id"] in self._batches:
                return self._batch(method, self._batches[batch["id"]], cancel=bool(batch["cancel"]))
            if file and file["id"] in self._files and method == "GET":
                found = self._files[file["id"]]
                return Reply(200, {}, {"Content-Type": "application/octet-stream"}, found.data) if file["content"] \
                    else Reply(200, found.body())
            return error(404, f"No such object: {route}", code="not_found")

    def expire(self, batch_id: str, *, finished: int) -> None:
        """End a batch as its completion window would: the first `finished` lines answered,
        the rest failed with ``batch_expired``."""
        with self._lock:
            self._end(self._batches[batch_id], "expired", finished)

    @property
    def batch_ids(self) -> list[str]:
        """The batches created so far, oldest first."""
        with self._lock:
            return list(self._batches)

    # the routes
    def _upload(self, content_type: str, raw: bytes) -> Reply:
        parts = _form_parts(content_type, raw)
        if "file" not in parts or parts.get("purpose", (b"", ""))[0] not in (b"batch", b"batch_output"):
            return error(400, "Upload a 'file' with purpose 'batch'.", param="file")
        data, filename = parts["file"]
        return Reply(200, self._new_file(data, filename or "upload.jsonl", "batch").body())

    def _create(self, raw: bytes) -> Reply:
        try:
            body = json.loads(raw or b"{}")
            lines = [json.loads(line) for line in self._files[body["input_file_id"]].data.splitlines() if line.strip()]
        except (ValueError, KeyError, TypeError):
            return error(400, "Give the id of an uploaded JSONL file as 'input_file_id'.", param="input_file_id")
        if body.get("endpoint") not in ("/v1/chat/completions", "/v1/embeddings"):
            return error(400, "'endpoint' must be /v1/chat/completions or /v1/embeddings.", param="endpoint")
        batch = _Batch(f"batch_{uuid.uuid4().hex[:24]}", body["endpoint"], body["input_file_id"], lines,
                       body.get("metadata"))
        self._batches[batch.id] = batch
        return Reply(200, self._body(batch))

    def _batch(self, method: str, batch: _Batch, *, cancel: bool) -> Reply:
        if cancel and method == "POST":
            if batch.ended is None:
                self._end(batch, "cancelled", self._progress(batch))
            return Reply(200, self._body(batch))
        if method != "GET":
            return error(405, "Use GET to retrieve a batch.")
        if batch.ended is None and time.time() - batch.created >= self.delay_s:
            self._end(batch, "completed", len(batch.lines))
        return Reply(200, self._body(batch))

    # the batch's lifecycle
    def _progress(self, batch: _Batch) -> int:
        """Lines a batch still going has answered by now (rising evenly over the delay)."""
        share = (time.time() - batch.created) / self.delay_s if self.delay_s > 0 else 1.0
        return min(len(batch.lines), int(len(batch.lines) * max(0.0, share - VALIDATING_SHARE)))

    def _end(self, batch: _Batch, how: str, answered: int) -> None:
        """Answer the first `answered` lines, write the output and error files, and end."""
        output: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for number, line in enumerate(batch.lines):
            if number < answered:
                reply = self.answer(batch.endpoint, line.get("body") or {})
                (output if reply.status == 200 else errors).append(_result_line(line, reply))
            elif how == "expired":
                errors.append(_unfinished_line(line))
        batch.ended, batch.ended_at = how, time.time()
        batch.finished, batch.failed = len(output), len(errors)
        if output:
            batch.output_file_id = self._new_file(_jsonl(output), f"{batch.id}_output.jsonl", "batch_output").id
        if errors:
            batch.error_file_id = self._new_file(_jsonl(errors), f"{batch.id}_error.jsonl", "batch_output").id

    def _new_file(self, data: bytes, filename: str, purpose: str) -> _File:
        file = _File(f"file-{uuid.uuid4().hex[:24]}", data, filename, purpose)
        self._files[file.id] = file
        return file

    def _body(self, batch: _Batch) -> dict[str, Any]:
        """The batch object as OpenAI sends it."""
        now, created = time.time(), int(batch.created)
        status = batch.ended or ("validating" if now - batch.created < self.delay_s * VALIDATING_SHARE
                                 else "in_progress")
        done = batch.finished if batch.ended else self._progress(batch)
        stamps: dict[str, int | None] = {f"{name}_at": None for name in ("in_progress", "finalizing", "completed", "failed", "expired",
                                                   "cancelling", "cancelled")}
        if batch.ended:
            stamps[f"{batch.ended}_at"] = int(batch.ended_at or now)
        return {
            "id": batch.id, "object": "batch", "endpoint": batch.endpoint, "errors": None,
            "input_file_id": batch.input_file_id, "completion_window": "24h", "status": status,
            "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
            "created_at": created, "expires_at": created + 86_400, **stamps,
            "request_counts": {"total": len(batch.lines), "completed": done, "failed": batch.failed},
            "metadata": batch.metadata,
        }


def _result_line(line: dict[str, Any], reply: Reply) -> dict[str, Any]:
    request_id = f"req_{uuid.uuid4().hex[:24]}"
    return {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": line.get("custom_id"),
            "response": {"status_code": reply.status, "request_id": request_id, "body": reply.body},
            "error": None}


def _unfinished_line(line: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": line.get("custom_id"), "response": None,
            "error": {"code": "batch_expired",
                      "message": "This request could not be executed before the completion window expired."}}


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")


def _form_parts(content_type: str, raw: bytes) -> dict[str, tuple[bytes, str | None]]:
    """A multipart/form-data body's parts: name -> (bytes, filename)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    if not message.is_multipart():
        return {}
    parts: dict[str, tuple[bytes, str | None]] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if name:
            parts[str(name)] = (payload if isinstance(payload, bytes) else b"", part.get_filename())
    return parts
