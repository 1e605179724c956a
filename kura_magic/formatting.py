"""Pure text formatting of money, sizes and durations, shared by tables, the panel and text."""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence


def money(amount: float | None, *, unknown: int = 0) -> str:
    """Dollars by one rule everywhere: three significant digits below $1, cents from $1 up;
    '≥' when some costs are unknown.

    Example:
        >>> money(0.014596), money(0.015016), money(0.0000973), money(1.5), money(1234.5)
        ('$0.0146', '$0.0150', '$0.0000973', '$1.50', '$1,234.50')
        >>> money(0.0), money(0.0, unknown=2), money(None)
        ('$0.00', '≥ $0.00', 'unknown')
    """
    if amount is None:
        return "unknown"
    prefix = "≥ " if unknown else ""
    if amount == 0 or abs(amount) >= 1:
        return f"{prefix}${amount:,.2f}"
    decimals = 2 - math.floor(math.log10(abs(amount)))
    return f"{prefix}${amount:.{decimals}f}"


def size(n_bytes: int | None) -> str:
    """Bytes in the largest fitting binary unit.

    Example:
        >>> size(0), size(2048), size(5 * 1024**3)
        ('0 B', '2.0 KiB', '5.0 GiB')
    """
    if n_bytes is None:
        return "?"
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def duration(seconds: float | None) -> str:
    """Seconds as a short human duration.

    Example:
        >>> duration(0.0042), duration(1.234), duration(75)
        ('4 ms', '1.23 s', '1 min 15 s')
    """
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def whole_seconds(seconds: float) -> str:
    """A time left, to the second: a ticking ETA that does not jitter in hundredths.

    Example:
        >>> whole_seconds(0.4), whole_seconds(2.49), whole_seconds(75.2)
        ('<1 s', '2 s', '1 min 15 s')
    """
    if seconds < 0.5:
        return "<1 s"
    return duration(float(round(seconds))) if seconds >= 60 else f"{round(seconds)} s"


def terminal_width() -> int:
    """The terminal's width in characters (100 where there is none, e.g. in a notebook)."""
    return shutil.get_terminal_size((100, 24)).columns


def bar(fraction: float, width: int = 20) -> str:
    """A text progress bar in eighths of a block, like tqdm's.

    Example:
        >>> bar(0.5, 8), bar(0.3, 4), bar(1.0, 3)
        ('████    ', '█▎  ', '███')
    """
    eighths = round(max(0.0, min(fraction, 1.0)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")).ljust(width)


def cut(text: str, limit: int) -> str:
    """One line of at most `limit` characters, '…' where it was cut.

    Example:
        >>> cut("a  long line", 6), cut("short", 6)
        ('a lon…', 'short')
    """
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def text_rows(rows: Sequence[Sequence[str]], widths: Sequence[int]) -> list[str]:
    """`rows` as the lines of a plain text table: each cell cut to its column's width and
    padded, two spaces between columns, no trailing spaces.

    Example:
        >>> text_rows([("id", "summary"), ("c0", "a long answer")], [3, 8])
        ['id   summary', 'c0   a long …']
    """
    return ["  ".join(cut(cell, width).ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in rows]


# The CSS class JupyterLab reads to leave a block's text alone: without it, any two
# "$" (costs, or model text) in one output are typeset as maths.
NO_MATHS = "mathjax_ignore"

# The most rows an HTML or text view shows; the rest are one `.to_pandas()` away.
ROW_LIMIT = 200
# A comparison shows at most this many rows (the differing ones first): each row holds two
# outputs, and a saved notebook keeps them all.
COMPARE_ROW_LIMIT = 50
# A run's results as text (terminal IPython): the first rows.
TEXT_ROWS = 20
# A table cell's text longer than this is cut, the whole a click away.
CELL_CHARS = 160


def counted(n: int, noun: str) -> str:
    """`n` and the noun, plural unless n is 1.

    Example:
        >>> counted(1, "word"), counted(3, "word")
        ('1 word', '3 words')
    """
    return f"{n} {noun}{'' if n == 1 else 's'}"
