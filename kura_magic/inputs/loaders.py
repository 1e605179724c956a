"""Turn what a user has (Conversations, dicts, strings, a DataFrame, a JSON/JSONL file)
into `Conversation`s, naming the row and field of anything that does not fit: all at once
(`load_conversations`) or one at a time (`iter_conversations`: a JSONL file is read line
by line, never whole)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kura_magic.errors import DataError
from kura_magic.types import Conversation, Problem

ConversationSource = Any  # list of Conversation/dict/str, a DataFrame, or a path

_TEXT_FIELDS = ("text", "transcript", "content")
_ID_FIELDS = ("chat_id", "id", "conversation_id")


def load_conversations(source: ConversationSource) -> list[Conversation]:
    """Read conversations from a list, a pandas DataFrame, or a .json/.jsonl path.

    Example:
        >>> [c.chat_id for c in load_conversations(["hello", {"text": "hi", "id": 7}])]
        ['0', '7']
    """
    return list(iter_conversations(source))


def iter_conversations(source: ConversationSource) -> Iterator[Conversation]:
    """The conversations of `source` (as `load_conversations` reads it) one at a time: a
    .jsonl file is read a line at a time and a list an item at a time, so a million
    conversations are never all in memory. A bad row raises when it is reached.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "chats.jsonl"
        >>> _ = path.write_text('{"id": "a", "text": "hi"}\\n{"id": "b", "text": "bye"}\\n')
        >>> [c.chat_id for c in iter_conversations(path)]
        ['a', 'b']
    """
    if isinstance(source, (str, Path)) and Path(source).suffix.lower() == ".jsonl":
        return _from_rows(_jsonl_rows(Path(source)), origin=str(source))
    if isinstance(source, (str, Path)):
        return _from_rows(_read_file(Path(source)), origin=str(source))
    if _is_dataframe(source):
        return _from_rows(source.to_dict(orient="records"), origin="the DataFrame")
    if isinstance(source, Conversation):
        return iter([source])
    if isinstance(source, Iterable) and not isinstance(source, (bytes, Mapping)):
        return _from_rows(source, origin="the data")
    raise DataError(
        f"cannot read conversations from a {type(source).__name__}: give a list of "
        "conversations, dicts or strings, a pandas DataFrame, or a .json/.jsonl path"
    )


def _is_dataframe(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and hasattr(value, "to_dict")


def _read_file(path: Path) -> list[Any]:
    _check_file(path)
    text = read_utf8(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON (line {exc.lineno}): {exc.msg}") from None
    rows = data.get("conversations") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise DataError(f"{path} holds no list of conversations (nor a 'conversations' list)")
    return rows


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"no file {str(path)!r}: give a path to a .json or .jsonl file")


def _jsonl_rows(path: Path) -> Iterator[Any]:
    """The rows of a JSONL file, a line at a time (blank lines skipped)."""
    _check_file(path)
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield _parse_line(_utf8_line(line, number, path), number, path)


def read_utf8(path: Path) -> str:
    """The text of the file at `path`; a byte that is not UTF-8 is a `DataError` naming its line.

    Example:
        >>> import pathlib, tempfile
        >>> latin1 = pathlib.Path(tempfile.mkdtemp()) / "latin1.jsonl"
        >>> _ = latin1.write_bytes(b'{"text": "ok"}\\n{"text": "caf\\xe9"}\\n')
        >>> read_utf8(latin1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        kura_magic.errors.DataError: .../latin1.jsonl line 2 is not UTF-8 (byte 0xe9): ...
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, data.count(b"\n", 0, exc.start) + 1, data[exc.start]) from None


def _utf8_line(line: bytes, number: int, path: Path) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, number, line[exc.start]) from None


def _not_utf8(path: Path, line: int, byte: int) -> DataError:
    return DataError(
        f"{path} line {line} is not UTF-8 (byte {byte:#04x}): save the file "
        "as UTF-8 (if it was written as Latin-1 or cp1252, re-encode it)"
    )


def _parse_line(line: str, number: int, path: Path) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {number} is not valid JSON: {exc.msg}") from None


def _from_rows(rows: Iterable[Any], *, origin: str) -> Iterator[Conversation]:
    count = 0
    for count, row in enumerate(rows, start=1):
        yield _to_conversation(row, count - 1, origin)
    if not count:
        raise DataError(f"{origin} holds no conversations")


def _to_conversation(row: Any, index: int, origin: str) -> Conversation:
    if type(row) is dict:  # the common case first: no isinstance walk through the ABCs
        return _validated(_normalise(row, index), index, origin)
    if isinstance(row, Conversation):
        return row
    if isinstance(row, str):
        row = {"text": row}
    if not isinstance(row, Mapping):
        raise DataError(
            f"row {index} of {origin} is a {type(row).__name__}: each row must be a "
            "conversation, a dict or a string"
        )
    return _validated(_normalise(row, index), index, origin)


def _validated(row: dict[str, Any], index: int, origin: str) -> Conversation:
    try:
        return Conversation.model_validate(row)
    except ValidationError as exc:
        raise DataError(_describe_row_error(exc, index, origin)) from None


def _normalise(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Map the accepted row shapes onto Kura's: ids, a text column, extra columns as metadata
    (a new dict: `row` is left as it is).

    Example:
        >>> _normalise({"id": 7, "text": "hi", "lang": "en"}, 0)
        {'messages': [{'role': 'user', 'content': 'hi'}], 'chat_id': 7, 'metadata': {'lang': 'en'}}
        >>> _normalise({"chat_id": "a", "messages": []}, 0)
        {'messages': [], 'chat_id': 'a', 'metadata': {}}
    """
    if len(row) == 2 and "messages" in row:  # Kura's own shape, id and messages: nothing to map
        first, second = row
        id_field = second if first == "messages" else first
        if id_field in _ID_FIELDS and row[id_field] is not None:
            return {"messages": row["messages"], "chat_id": row[id_field], "metadata": {}}
    row = dict(row)
    chat_id = next((row.pop(k) for k in _ID_FIELDS if row.get(k) is not None), index)
    known = {"created_at", "messages", "metadata"}
    text_field = next((k for k in _TEXT_FIELDS if k in row and "messages" not in row), None)
    if text_field is not None:
        row["messages"] = [{"role": "user", "content": row.pop(text_field)}]
    extra = {k: row.pop(k) for k in list(row) if k not in known}
    metadata = {**extra, **(row.get("metadata") or {})}
    return {**row, "chat_id": chat_id, "metadata": metadata}


def _describe_row_error(exc: ValidationError, index: int, origin: str) -> str:
    problem = Problem.of(exc)
    what = "is empty: a conversation needs at least one message" if (
        problem.kind == "too_short" and problem.where == "messages"
    ) else problem.message
    return f"row {index} of {origin}, field {problem.where!r}: {what}"
