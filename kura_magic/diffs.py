"""Word diffs of two texts: the stretches that are the same and those that changed. Pure
text, under both the run history (what changed since the last run) and the views (changed
words marked)."""

from __future__ import annotations

import difflib
import re
from typing import NamedTuple

_TOKENS = re.compile(r"\s+|\S+")


class Chunk(NamedTuple):
    """A stretch of two texts: the same in both, or changed (`old` in a, `new` in b)."""

    old: str
    new: str
    changed: bool


def word_diff(a: str, b: str) -> list[Chunk]:
    """`a` and `b` cut into stretches that are the same and stretches that changed, word by word.

    Example:
        >>> [tuple(c) for c in word_diff("Summarise in one line", "Summarise in two lines")]
        [('Summarise in ', 'Summarise in ', False), ('one line', 'two lines', True)]
    """
    old, new = _TOKENS.findall(a), _TOKENS.findall(b)
    chunks = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        chunks.append(Chunk("".join(old[i1:i2]), "".join(new[j1:j2]), tag != "equal"))
    return _merged(chunks)


def _merged(chunks: list[Chunk]) -> list[Chunk]:
    """Join changed stretches separated only by a space, so 'one line' -> 'two lines' reads
    as one change, not two."""
    merged: list[Chunk] = []
    for i, chunk in enumerate(chunks):
        bridge = not chunk.changed and not chunk.old.strip() and i + 1 < len(chunks) and chunks[i + 1].changed
        if merged and merged[-1].changed and (chunk.changed or bridge):
            last = merged.pop()
            chunk = Chunk(last.old + chunk.old, last.new + chunk.new, True)
        merged.append(chunk)
    return merged


def changed_words(a: str, b: str) -> int:
    """How many words changed between `a` and `b` (a replaced stretch counts its longer side).

    Example:
        >>> changed_words("Summarise in one line", "Summarise in two lines"), changed_words("x", "x")
        (2, 0)
    """
    return sum(max(len(c.old.split()), len(c.new.split())) for c in word_diff(a, b) if c.changed)


def cut_chunks(chunks: list[Chunk], *, side: str, limit: int) -> list[Chunk]:
    """The start of a word diff whose `side` ('old': a's text, 'new': b's) is at most `limit`
    characters, for a long output's first lines.

    Example:
        >>> [tuple(c) for c in cut_chunks(word_diff("a b c d", "a x c d"), side="new", limit=3)]
        [('a ', 'a ', False), ('b', 'x', True)]
    """
    kept, room = [], limit
    for chunk in chunks:
        text = chunk.new if side == "new" else chunk.old
        if len(text) > room:
            if room:
                kept.append(Chunk(chunk.old[:room], chunk.new[:room], chunk.changed))
            break
        kept.append(chunk)
        room -= len(text)
    return kept


def margins(chunk: Chunk) -> tuple[str, str]:
    """The white space around a changed stretch, kept outside its marks.

    Example:
        >>> margins(Chunk(" short", "", True))
        (' ', '')
    """
    side = chunk.new if chunk.new.strip() else chunk.old
    core = side.strip()
    if not core:
        return side, ""
    start = side.index(core)
    return side[:start], side[start + len(core):]
