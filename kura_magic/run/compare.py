"""Two runs side by side per conversation, with the rows whose output differs marked, and
what changed between them: the prompt word by word, the model and its parameters.

Pure: builds a pandas DataFrame and its text; the HTML view is `notebook.views`; finding
recorded runs to compare is `history.compare`.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import TYPE_CHECKING, Any, NamedTuple

from kura_magic import formatting
from kura_magic.errors import ConfigError
from kura_magic.run.results import SummaryResult, SummaryRun

if TYPE_CHECKING:
    import pandas

ID_COLUMN = "conversation_id"
DIFFERS_COLUMN = "differs"
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


def marked_text(chunks: list[Chunk], *, side: str = "both") -> str:
    """A word diff as one text, wdiff-style: `[-removed-]{+added+}`; `side` 'old' keeps only the
    removed words (a's text), 'new' only the added ones (b's text).

    Example:
        >>> marked_text(word_diff("in one line", "in two lines"))
        'in [-one line-]{+two lines+}'
        >>> marked_text(word_diff("in one line", "in two lines"), side="new")
        'in {+two lines+}'
    """
    parts = []
    for chunk in chunks:
        if not chunk.changed:
            parts.append(chunk.old)
            continue
        removed, added = chunk.old.strip(), chunk.new.strip()
        lead, trail = margins(chunk)
        marks = f"[-{removed}-]" if removed and side != "new" else ""
        marks += f"{{+{added}+}}" if added and side != "old" else ""
        parts.append(lead + marks + trail)
    return "".join(parts)


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


def comparison_text(frame: pandas.DataFrame, *, width: int = 100) -> str:
    """Rows of a comparison as a plain text table (the first `TEXT_ROWS`): '≠' on the rows
    that differ, each output cut to fit, its changed words marked `[-removed-]` / `{+added+}`.

    Example:
        >>> import pandas
        >>> rows = {"conversation_id": ["1", "2"], "a": ["refund", "login"], "b": ["refund", "reset"],
        ...         "differs": [False, True]}
        >>> print(comparison_text(pandas.DataFrame(rows)))
           id  a          b
           1   refund     refund
        ≠  2   [-login-]  {+reset+}
    """
    rows = [("", "id", str(frame.columns[1]), str(frame.columns[2]))]
    for cid, a, b, differs in frame.head(formatting.TEXT_ROWS).itertuples(index=False, name=None):
        rows.append(("≠" if differs else "", str(cid), *_marked_pair(a, b)))
    id_width = min(max(len(row[1]) for row in rows), 24)
    room = max((width - id_width - 7) // 2, 20)
    widths = [1, id_width, *(min(max(len(row[i]) for row in rows), room) for i in (2, 3))]
    lines = formatting.text_rows(rows, widths)
    hidden = len(frame) - formatting.TEXT_ROWS
    return "\n".join(lines + ([f"… {hidden} more rows: .frame"] if hidden > 0 else []))


def _marked_pair(a: object, b: object) -> tuple[str, str]:
    """Two outputs as text, with their changed words marked when both are there."""
    if not (isinstance(a, str) and isinstance(b, str)) or a == b:
        return shown(a), shown(b)
    chunks = word_diff(a, b)
    return marked_text(chunks, side="old"), marked_text(chunks, side="new")


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


def counted(n: int, noun: str) -> str:
    """`n` and the noun, plural unless n is 1.

    Example:
        >>> counted(1, "word"), counted(3, "word")
        ('1 word', '3 words')
    """
    return f"{n} {noun}{'' if n == 1 else 's'}"


def prompt_summary(prompts: tuple[str, str]) -> str:
    """How the prompt changed between two runs, in a few words.

    Example:
        >>> prompt_summary(("In one line: {{ transcript }}", "In two lines: {{ transcript }}"))
        'prompt: 2 words changed'
    """
    words = changed_words(*prompts)
    if words == 0:
        return "prompt: the same in both runs" if prompts[0] == prompts[1] else "prompt: only white space changed"
    return f"prompt: {counted(words, 'word')} changed"


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
        """How many conversations' outputs differ."""
        return int(self.frame[DIFFERS_COLUMN].sum())

    @property
    def rows(self) -> pandas.DataFrame:
        """The rows to show: all of them, or only the changed ones."""
        return self.frame[self.frame[DIFFERS_COLUMN]] if self.changed_only else self.frame

    @property
    def caption(self) -> str:
        return caption(self.frame) + (" (only those shown)" if self.changed_only else "")

    @property
    def hint(self) -> str:
        """How to see only the differing rows, when some rows are the same and all are shown.

        Example:
            >>> import pandas
            >>> rows = {"conversation_id": ["1", "2"], "a": ["x", "y"], "b": ["x", "z"], "differs": [False, True]}
            >>> Comparison(pandas.DataFrame(rows), changed_flag="%kura compare v1 v2 --changed").hint
            'to see only the 1 that differs: %kura compare v1 v2 --changed'
        """
        if self.changed_only or self.changed in (0, len(self.frame)):
            return ""
        return f"to see only the {self.changed} that {'differs' if self.changed == 1 else 'differ'}: {self.changed_flag}"

    def setting_lines(self) -> list[str]:
        """Each setting that differs, as 'name: a → b'."""
        return [f"{name}: {a} → {b}" for name, (a, b) in self.settings.items()]

    def header_lines(self) -> list[str]:
        """What changed besides the outputs: the prompt (with its word diff), then the settings."""
        if self.prompts is None:
            return self.setting_lines()
        diff = marked_text(word_diff(*self.prompts)) if self.prompts[0] != self.prompts[1] else ""
        return [prompt_summary(self.prompts) + (f": {diff}" if diff else ""), *self.setting_lines()]

    def __repr__(self) -> str:
        hint = [self.hint] if self.hint else []
        return "\n".join([*self.header_lines(), self.caption, *hint, comparison_text(self.rows)])

    def _repr_html_(self) -> str:
        from kura_magic.views.html import comparison_html

        return comparison_html(self)
