"""A sweep as HTML: the leaderboard over the grid of conversation × variant, where the
variants disagree marked and long outputs a click away."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from kura_magic import formatting
from kura_magic.views.html import Figure, Key, Markup, cut_html, table_html

if TYPE_CHECKING:
    from kura_magic.run.sweep import Sweep

# Rows where the variants disagree, tinted as `%kura compare` tints changed rows; the cells
# that differ from the row's most common output get an edge.
SWEEP_CSS = (
    ".kura-sweep tr.kura-differs>td{background:rgba(255,152,0,.16)!important;"
    "background:color-mix(in srgb,var(--jp-warn-color1,#ff9800) 16%,var(--jp-layout-color0,#fff))!important}"
    ".kura-sweep .kura-odd{border-left:3px solid #fb8c00;padding-left:4px}"
)


def sweep_html(result: Sweep) -> str:
    """The leaderboard over the grid of conversation × variant."""
    return (f'<div class="kura-sweep {formatting.NO_MATHS}"><style>{SWEEP_CSS}</style>'
            f"{leaderboard_html(result)}{grid_html(result)}</div>")


def leaderboard_html(result: Sweep) -> str:
    board = result.leaderboard()
    rows = [([Key(row["variant"]), row["model"], Figure(_number(row["score"])), Figure(_share(row["agreement"])),
              Figure(formatting.money(row["cost"])), Figure(formatting.money(row["saved"])),
              Figure(formatting.duration(row["latency_s"]) if row["latency_s"] == row["latency_s"] else ""),
              Figure(str(row["errors"]))], None) for row in board.to_dict("records")]
    return table_html("leaderboard", ["variant", "model", "score", "agreement", "cost", "saved", "latency", "errors"],
                      rows, caption=result.summary_line())


def grid_html(result: Sweep) -> str:
    """One row per conversation, one column per variant (sample 0); rows where the variants
    disagree are tinted and counted, the cells unlike the row's most common output edged."""
    names = list(result.runs)
    count = len(result.conversations)
    differing = [i for i in range(count) if result.differs(i)]
    rows = [(["≠" if i in differing else "", Key(result.conversations[i].chat_id), *_cells(result, i, names)],
             "kura-differs" if i in differing else None) for i in range(min(count, formatting.ROW_LIMIT))]
    caption = f"{len(differing)} of {count} conversations differ between variants"
    return table_html("sweep-grid", ["", "id", *names], rows, caption=caption,
                      hidden=count - formatting.ROW_LIMIT, hidden_hint=".to_pandas()")


def _cells(result: Sweep, index: int, names: list[str]) -> list[str]:
    outputs = result.outputs(index)
    common = Counter(outputs.values()).most_common(1)[0][0]
    cells: list[str] = []
    for name in names:
        text = cut_html(outputs[name] or "")
        scores = result.cells[name, 0].scores
        if scores is not None and scores[index].score is not None:
            text += f' <span class="kura-score">({_number(scores[index].score)})</span>'
        odd = outputs[name] != common and len(set(outputs.values())) > 1
        cells.append(Markup(f'<div class="kura-odd">{text}</div>' if odd else text))
    return cells


def _number(value: float | None) -> str:
    return "" if value is None or value != value else f"{value:.2f}"  # None or NaN: no score


def _share(value: float) -> str:
    return "" if value != value else f"{value:.0%}"
