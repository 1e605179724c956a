"""A sweep as HTML: the leaderboard over the grid of conversation × variant, where the
variants disagree marked and long outputs a click away."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kura_magic import formatting
from kura_magic.views.html import Figure, Key, Markup, Row, cut_html, table_html

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


# The leaderboard's columns: title, and how a row's value reads (score and agreement only
# where a scorer or samples give them).
BOARD_COLUMNS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "variant": ("variant", Key), "model": ("model", str),
    "score": ("mean score", lambda v: Figure(_number(v))), "agreement": ("samples agree", lambda v: Figure(_share(v))),
    "cost": ("cost", lambda v: Figure(formatting.money(v))), "saved": ("saved", lambda v: Figure(formatting.money(v))),
    "latency_s": ("latency", lambda v: Figure("" if math.isnan(v) else formatting.duration(v))),
    "errors": ("errors", lambda v: Figure(str(v))),
}


def leaderboard_html(result: Sweep) -> str:
    """One row per variant, best mean score first (as `leaderboard()`)."""
    left_out = {"score"} if not result.scored else set()
    left_out |= {"agreement"} if result.samples < 2 else set()
    columns = {name: shown for name, shown in BOARD_COLUMNS.items() if name not in left_out}
    rows = [([shown[1](row[name]) for name, shown in columns.items()], None)
            for row in result.leaderboard().to_dict("records")]
    return table_html("leaderboard", [title for title, _ in columns.values()], rows, caption=result.summary_line())


def grid_html(result: Sweep) -> str:
    """One row per conversation, one column per variant (sample 0); rows where the variants
    disagree are tinted and counted, the cells unlike the row's most common output edged."""
    names = list(result.runs)
    count = len(result.conversations)
    differing = [i for i in range(count) if result.differs(i)]
    rows: list[Row] = [(["≠" if i in differing else "", Key(result.conversations[i].chat_id), *_cells(result, i, names)],
             "kura-differs" if i in differing else None) for i in range(min(count, formatting.ROW_LIMIT))]
    caption = f"{len(differing)} of {count} conversations differ between variants"
    return table_html("sweep-grid", ["", "id", *names], rows, caption=caption,
                      hidden=count - formatting.ROW_LIMIT, hidden_hint=".to_pandas()")


def _cells(result: Sweep, index: int, names: list[str]) -> list[Markup]:
    outputs = result.outputs(index)
    ranked = Counter(outputs.values()).most_common(2)
    # the cells unlike a clear majority are edged; a tie has none
    common = ranked[0][0] if len(ranked) > 1 and ranked[0][1] > max(ranked[1][1], 1) else None
    cells = []
    for name in names:
        text = cut_html(outputs[name] or "")
        scores = result.cells[name, 0].scores
        score = scores[index].score if scores is not None else None
        if score is not None:
            text += f' <span class="kura-score">({_number(score)})</span>'
        odd = common is not None and outputs[name] != common
        cells.append(Markup(f'<div class="kura-odd">{text}</div>' if odd else text))
    return cells


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.2f}"  # NaN: no score


def _share(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.0%}"
