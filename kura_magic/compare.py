"""Two runs side by side per conversation, with the rows whose output differs marked.

Pure: builds a pandas DataFrame and its text; the HTML view is `notebook.views`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from kura_magic import formatting
from kura_magic.errors import ConfigError
from kura_magic.results import SummaryResult, SummaryRun

if TYPE_CHECKING:
    import pandas

ID_COLUMN = "conversation_id"
DIFFERS_COLUMN = "differs"


def compare_runs(a: SummaryRun, b: SummaryRun, *, labels: tuple[str, str] = ("a", "b")) -> pandas.DataFrame:
    """One row per conversation id (in a's order, then b's new ids): each run's output, and whether they differ.

    A conversation missing from one run is NA there and counts as differing.

    Example:
        >>> from kura_magic import summarise
        >>> run_v1 = summarise(convs, "Summarise:\\n{{ transcript }}")
        >>> run_v2 = summarise(convs[:3] + [convs[0]], "Summarise:\\n{{ transcript }}")
        >>> frame = compare_runs(run_v1, run_v2, labels=("v1", "v2"))
        >>> list(frame.columns), frame["differs"].tolist()
        (['conversation_id', 'v1', 'v2', 'differs'], [False, False, False, True, True])
    """
    import pandas

    _check_labels(labels)
    left, right = _outputs(a), _outputs(b)
    rows = [
        {ID_COLUMN: cid, labels[0]: left.get(cid), labels[1]: right.get(cid),
         DIFFERS_COLUMN: cid not in left or cid not in right or left[cid] != right[cid]}
        for cid in dict.fromkeys([*left, *right])
    ]
    return pandas.DataFrame(rows, columns=[ID_COLUMN, *labels, DIFFERS_COLUMN])


def _check_labels(labels: tuple[str, str]) -> None:
    if labels[0] == labels[1] or {ID_COLUMN, DIFFERS_COLUMN} & set(labels):
        raise ConfigError(
            f"cannot label the runs {labels[0]!r} and {labels[1]!r}: give two different names, "
            f"neither {ID_COLUMN!r} nor {DIFFERS_COLUMN!r}"
        )


def _outputs(run: SummaryRun) -> dict[str, str]:
    return {result.conversation_id: output_text(result) for result in run.results}


def output_text(result: SummaryResult) -> str:
    """What a run answered for one conversation, as text: the summary, the schema's fields
    as JSON, or the error in brackets.

    Example:
        >>> output_text(SummaryResult(conversation_id="1", summary="Refund issued."))
        'Refund issued.'
    """
    if result.error is not None:
        return f"[{result.status}] {result.error}"
    fields = result.summary_fields()
    if list(fields) == ["summary"]:
        return str(fields["summary"])
    return json.dumps(fields, ensure_ascii=False)


def comparison_text(frame: pandas.DataFrame) -> str:
    """The comparison as plain text: the caption, then each differing conversation's two outputs."""
    label_a, label_b = frame.columns[1], frame.columns[2]
    differing = frame[frame[DIFFERS_COLUMN]].head(formatting.ROW_LIMIT)
    blocks = [
        f"≠ {cid}\n  {label_a}: {shown(a)}\n  {label_b}: {shown(b)}"
        for cid, a, b, _ in differing.itertuples(index=False, name=None)
    ]
    return "\n".join([caption(frame), *blocks])


def shown(output: object) -> str:
    """An output as text; a conversation missing from a run says so."""
    return output if isinstance(output, str) else "(not in this run)"


def caption(frame: pandas.DataFrame) -> str:
    """One line: how many conversations differ between the two runs.

    Example:
        >>> import pandas
        >>> caption(pandas.DataFrame({"conversation_id": ["1", "2"], "a": ["x", "y"], "b": ["x", "z"], "differs": [False, True]}))
        'a vs b: 1 of 2 conversations differ'
    """
    differing = int(frame[DIFFERS_COLUMN].sum())
    return f"{frame.columns[1]} vs {frame.columns[2]}: {differing} of {len(frame)} conversations differ"


class Comparison:
    """What `%kura compare` shows: the comparison table, as HTML in a notebook, as text elsewhere.

    Example:
        >>> from kura_magic import summarise
        >>> short = summarise(convs, "In five words:\\n{{ transcript }}")
        >>> long = summarise(convs, "In detail:\\n{{ transcript }}")
        >>> print(Comparison(compare_runs(short, long)))   # doctest: +ELLIPSIS
        a vs b: 5 of 5 conversations differ
        ≠ conv-001
          a: Summary: In five words: ...
    """

    def __init__(self, frame: pandas.DataFrame) -> None:
        self.frame = frame

    def __repr__(self) -> str:
        return comparison_text(self.frame)

    def _repr_html_(self) -> str:
        from kura_magic.notebook.views import comparison_html

        return comparison_html(self.frame, caption(self.frame))
