"""Checkpoints: a finished run's results as JSONL, named by a hash of what produced them.

The name covers every call's cache key (model, rendered prompt, schema, parameters)
and the conversations' ids, so a changed prompt never loads a stale checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

from kura_magic.errors import CacheError
from kura_magic.keys import canonical_json
from kura_magic.run.results import SummaryResult


def checkpoint_path(directory: str | Path, keys: list[str], ids: list[str]) -> Path:
    """Where the checkpoint of a run with these keys and ids lives.

    Example:
        >>> checkpoint_path("/tmp/ck", ["km2-chat-a"], ["1"]).name
        'summaries-c35e8ba33522ff66.jsonl'
    """
    digest = hashlib.sha256(canonical_json({"keys": keys, "ids": ids}).encode()).hexdigest()
    return Path(directory).expanduser() / f"summaries-{digest[:16]}.jsonl"


def save_checkpoint(path: Path, results: Iterable[SummaryResult]) -> None:
    """Write `results` to `path` (atomically: a reader never sees half a file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        with partial.open("w", encoding="utf-8") as out:
            for result in results:
                out.write(result.model_dump_json(exclude={"metadata"}) + "\n")
        partial.replace(path)
    except OSError as exc:
        raise CacheError(f"cannot write the checkpoint {path}: {exc}") from exc


def load_checkpoint(path: Path, schema: type[BaseModel] | None) -> list[SummaryResult] | None:
    """The results saved at `path`, or None if there is no readable checkpoint."""
    if not path.is_file():
        return None
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        results = [SummaryResult.model_validate(row) for row in rows]
        if schema is not None:
            for result in results:
                if result.summary is not None:
                    result.summary = schema.model_validate(result.summary)
    except ValueError:
        return None  # damaged: the run is made (from the cache) and the file rewritten
    return results
