"""Two runs side by side per conversation, with the rows whose output differs marked, and
what changed between them: the prompt word by word, the model and its parameters.

Pure: builds a pandas DataFrame; its text and HTML are `views.text` and `views.html`
(imported when shown); finding recorded runs to compare is `history.compare`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from kura_magic.errors import ConfigError
from kura_magic.run.results import SummaryResult, SummaryRun

if TYPE_CHECKING:
    import pandas

ID_COLUMN = "conversation_id"
DIFFERS_COLUMN = "differs"


def run_settings(run: SummaryRun) -> dict[str, Any]:
    """What a run was made with, besides its prompt: model, schema, experiment, parameters.

    Example:
        >>> from kura_magic.run.results import RunStats
        >>> run_settings(SummaryRun([], RunStats(), model="m", experiment="e", params={"temperature": 0}))
        {'model': 'm', 'schema': None, 'experiment': 'e', 'temperature': 0}
    """
    return {"model": run.model, "schema": run.schema_name, "experiment": run.experiment, **run.params}


def setting_changes(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The settings whose values differ, as (a's, b's); a setting one side lacks is None there.

    Example:
        >>> setting_changes({"model": "x", "seed": 1}, {"model": "y", "seed": 1})
        {'model': ('x', 'y')}
    """
    names = dict.fromkeys([*a, *b])
    return {name: (a.get(name), b.get(name)) for name in names if a.get(name) != b.get(name)}


def compare_runs(a: SummaryRun, b: SummaryRun, *, labels: tuple[str, str] = ("a", "b")) -> pandas.DataFrame:
    """One row per conversation id (in a's order, then b's new ids): each run's output, and whether they differ.

    A conversation missing from one run is NA there; it does not differ (there is nothing to
    compare), and `Comparison.only_in` counts it.

    Example:
        >>> from kura_magic import summarise
        >>> run_v1 = summarise(convs, "Summarise:\\n{{ transcript }}")
        >>> run_v2 = summarise(convs[:3] + [convs[0]], "Summarise:\\n{{ transcript }}")
        >>> frame = compare_runs(run_v1, run_v2, labels=("v1", "v2"))
        >>> list(frame.columns), frame["differs"].tolist()
        (['conversation_id', 'v1', 'v2', 'differs'], [False, False, False, False, False])
    """
    import pandas

    _check_labels(labels)
    left, right = _outputs(a), _outputs(b)
    rows = [
        {ID_COLUMN: cid, labels[0]: left.get(cid), labels[1]: right.get(cid),
         DIFFERS_COLUMN: cid in left and cid in right and left[cid] != right[cid]}
        for cid in dict.fromkeys([*left, *right])
    ]
    return pandas.DataFrame(rows, columns=[ID_COLUMN, *labels, DIFFERS_COLUMN])


def pandas_concat(first: pandas.DataFrame, then: pandas.DataFrame) -> pandas.DataFrame:
    """`first`'s rows, then `then`'s."""
    import pandas

    return pandas.concat([first, then])


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


class Comparison:
    """What `%kura compare` shows: what changed between two runs (prompt, settings), then the
    outputs side by side; as HTML in a notebook (changed words marked), as text elsewhere.

    Example:
        >>> from kura_magic import summarise
        >>> short = summarise(convs, "In five words:\\n{{ transcript }}")
        >>> long = summarise(convs, "In detail:\\n{{ transcript }}")
        >>> print(Comparison(compare_runs(short, long)))   # doctest: +ELLIPSIS
        a vs b: 5 of 5 conversations differ
           id        a ...b
        ≠  conv-001  Summary: In [-five words:-] ...
        >>> print(Comparison.of(short, long, changed_only=True))   # doctest: +ELLIPSIS
        prompt: 2 words changed: In [-five words:-]{+detail:+}
        {{ transcript }}
        a vs b: 5 of 5 conversations differ (only those shown)
        ...
    """

    def __init__(
        self, frame: pandas.DataFrame, *, prompts: tuple[str, str] | None = None,
        settings: dict[str, tuple[Any, Any]] | None = None, changed_only: bool = False,
        changed_flag: str = "km.compare(a, b, changed_only=True)",
    ) -> None:
        self.frame = frame
        self.prompts = prompts
        self.settings = settings or {}
        self.changed_only = changed_only
        self.changed_flag = changed_flag  # how to ask for only the differing rows, for the hint

    @classmethod
    def of(cls, a: SummaryRun, b: SummaryRun, *, labels: tuple[str, str] = ("a", "b"),
           changed_only: bool = False) -> Comparison:
        """Two runs compared: their prompts, their settings and their outputs."""
        return cls(compare_runs(a, b, labels=labels), prompts=(a.prompt, b.prompt),
                   settings=setting_changes(run_settings(a), run_settings(b)), changed_only=changed_only)

    @property
    def changed(self) -> int:
        """How many conversations' outputs differ (of those both runs have)."""
        return int(self.frame[DIFFERS_COLUMN].sum())

    @property
    def both(self) -> int:
        """How many conversations both runs have."""
        return len(self.frame) - sum(self.only_in.values())

    @property
    def only_in(self) -> dict[str, int]:
        """Per run's label, how many conversations only that run has (runs with none left out).

        Example:
            >>> import pandas
            >>> Comparison(pandas.DataFrame({"conversation_id": ["1", "2"], "a": ["x", None],
            ...                              "b": ["x", "y"], "differs": [False, False]})).only_in
            {'b': 1}
        """
        labels = [str(label) for label in self.frame.columns[1:3]]
        present = [self.frame[label].notna() for label in labels]
        counts = {labels[0]: int((present[0] & ~present[1]).sum()), labels[1]: int((present[1] & ~present[0]).sum())}
        return {label: count for label, count in counts.items() if count}

    @property
    def rows(self) -> pandas.DataFrame:
        """The rows to show: those that differ or that one run lacks first, then (unless
        `changed_only`) the rest."""
        labels = list(self.frame.columns[1:3])
        notable = self.frame[DIFFERS_COLUMN] | self.frame[labels].isna().any(axis=1)
        return self.frame[notable] if self.changed_only else pandas_concat(self.frame[notable], self.frame[~notable])

    def __repr__(self) -> str:
        from kura_magic.views.text import comparison_text

        return comparison_text(self)

    def _repr_html_(self) -> str:
        from kura_magic.views.html import comparison_html

        return comparison_html(self)
