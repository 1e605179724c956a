"""Every plain-text rendering: a run's results, a comparison, the run history, the panel's
pieces of text and the cache's sizes. Plain data in, text out; run data is imported for
type hints only, so the data classes may import this module when they are shown."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING

from kura_magic import formatting
from kura_magic.diffs import Chunk, changed_words, margins, word_diff
from kura_magic.types import UNANSWERED, CacheInfo, ResultStatus, RunStats

if TYPE_CHECKING:
    import pandas

    from kura_magic.run.compare import Comparison
    from kura_magic.run.results import SummaryResult, SummaryRun
    from kura_magic.views.history import RunHistory

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


def comparison_table_text(frame: pandas.DataFrame, *, width: int | None = None) -> str:
    """Rows of a comparison as a plain text table (the first `TEXT_ROWS`): '≠' on the rows
    that differ, each output cut to fit, its changed words marked `[-removed-]` / `{+added+}`.

    Example:
        >>> import pandas
        >>> rows = {"conversation_id": ["1", "2"], "a": ["refund", "login"], "b": ["refund", "reset"],
        ...         "differs": [False, True]}
        >>> print(comparison_table_text(pandas.DataFrame(rows)))
           id  a          b
           1   refund     refund
        ≠  2   [-login-]  {+reset+}
    """
    rows = [("", "id", str(frame.columns[1]), str(frame.columns[2]))]
    for cid, a, b, differs in frame.head(formatting.TEXT_ROWS).itertuples(index=False, name=None):
        rows.append(("≠" if differs else "", str(cid), *_marked_pair(a, b)))
    id_width = min(max(len(row[1]) for row in rows), 24)
    room = max(((width or formatting.terminal_width()) - id_width - 7) // 2, 20)
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


def prompt_summary(prompts: tuple[str, str]) -> str:
    """How the prompt changed between two runs, in a few words.

    Example:
        >>> prompt_summary(("In one line: {{ transcript }}", "In two lines: {{ transcript }}"))
        'prompt: 2 words changed'
    """
    words = changed_words(*prompts)
    if words == 0:
        return "prompt: the same in both runs" if prompts[0] == prompts[1] else "prompt: only white space changed"
    return f"prompt: {formatting.counted(words, 'word')} changed"


# Rows without an answer, said once per reason above the table rather than row by row.
UNANSWERED_WORDS: dict[ResultStatus, str] = {"skipped": "skipped", "unfinished": "not finished",
                                             "pending": "pending in a provider batch"}


def unanswered_notes(results: Iterable[SummaryResult]) -> list[str]:
    """One line per reason rows got no answer (the budget, an interrupt), with how many.

    Example:
        >>> from kura_magic.run.results import SummaryResult
        >>> rows = [SummaryResult(conversation_id=str(i), status="skipped",
        ...                       error="skipped: budget of $0.01 reached") for i in range(40)]
        >>> unanswered_notes(rows)
        ['40 calls skipped: budget of $0.01 reached']
    """
    reasons: dict[tuple[ResultStatus, str], int] = {}
    for result in results:
        if result.status in UNANSWERED:
            why = (result.error or "").removeprefix(f"{result.status}: ")
            reasons[result.status, why] = reasons.get((result.status, why), 0) + 1
    return [f"{count} {'call' if count == 1 else 'calls'} {UNANSWERED_WORDS[status]}: {why}"
            for (status, why), count in reasons.items()]


def results_text(run: SummaryRun, *, width: int | None = None) -> str:
    """A run as a plain text table (its first rows) for a terminal, then how to get them all.

    Example:
        >>> from kura_magic.run.results import RunStats, SummaryResult, SummaryRun
        >>> run = SummaryRun([SummaryResult(conversation_id="c0", summary="Refund asked.", cost=0.001)],
        ...                  RunStats(), model="m", experiment="e", label="v1")
        >>> print(results_text(run))
        id  status  cost      summary
        c0  fresh   $0.00100  Refund asked.
        all 1 rows: v1.to_pandas()
    """
    answered, shown = run.rows_with_status(UNANSWERED, among=False)
    rows = [(result.conversation_id, status_badge(result), cost_text(result), result.summary_text() or result.error or "")
            for result in itertools.islice(shown, formatting.TEXT_ROWS)]
    table = [("id", "status", "cost", "summary"), *rows]
    widths = [min(max(len(row[i]) for row in table), 24) for i in range(3)]
    room = max((width or formatting.terminal_width()) - sum(widths) - 6, 20)
    lines = formatting.text_rows(table, [*widths, room])
    more = f" ({answered - len(rows)} more not shown)" if answered > len(rows) else ""
    hint = f"all {len(run.results)} rows{more}: {run.label or 'run'}.to_pandas()"
    return "\n".join([*lines, *unanswered_notes(run.rows_with_status(UNANSWERED)[1]), hint])


def status_badge(result: SummaryResult) -> str:
    return "cached" if result.cached else ("fresh" if result.status == "ok" else result.status)


def cost_text(result: SummaryResult) -> str:
    """What the row cost, or for a cached row what it saved."""
    if result.cached and result.fresh_cost:
        return f"saved {formatting.money(result.fresh_cost)}"
    return formatting.money(result.cost) if result.status == "ok" or result.cost else ""


def cache_texts(info: CacheInfo, name: str) -> dict[str, str]:
    """The cache's size for experiment `name` and in total, and the list of experiments.

    Example:
        >>> cache_texts(CacheInfo(entries=0, bytes=0), "default")["kura-experiment-size"]
        'default: 0 entries, 0 B'
    """
    if not info.enabled:
        return {"kura-experiment-size": f"{name}: caching is off", "kura-total-size": "cache: off"}
    if info.problem is not None:
        return {"kura-experiment-size": f"{name}: not cached", "kura-total-size": info.problem}
    own = info.for_experiment(name)
    listed = ", ".join(f"{n} ({info.experiments[n].entries})" for n in sorted(info.experiments))
    vectors = info.embeddings
    return {
        "kura-experiment-size": f"{name}: {own.entries} entries, {formatting.size(own.bytes)}",
        "kura-total-size": f"cache: {info.entries} entries, {formatting.size(info.bytes)} on disk",
        "kura-embeddings-size": f"embeddings: {vectors.entries} vectors, {formatting.size(vectors.bytes)} on disk",
        "kura-experiments": f"experiments: {listed or 'none yet'}",
    }


def cache_table(info: CacheInfo, active: str) -> pandas.DataFrame:
    """`%kura stats`: one row per experiment (entries, bytes, size, active), then the whole cache.

    Example:
        >>> cache_table(CacheInfo(entries=0, bytes=0), "default").iloc[-1]["experiment"]
        '(whole cache)'
    """
    import pandas

    rows = [
        {"experiment": name, "entries": e.entries, "bytes": e.bytes,
         "size": formatting.size(e.bytes), "active": name == active}
        for name, e in sorted(info.experiments.items())
    ]
    rows.append({"experiment": "(whole cache)", "entries": info.entries, "bytes": info.bytes,
                 "size": formatting.size(info.bytes), "active": False})
    return pandas.DataFrame(rows)


def progress_line(stats: RunStats, rate: float | None) -> str:
    """The text view's live line, like tqdm's bar: share done, bar, where the run is, elapsed
    and time left at `rate` (calls per second, as `RunPanel.rate`), rate, then counts and money.

    Example:
        >>> progress_line(RunStats(total=4, done=1, fresh=1, elapsed_s=2.0), 0.5)
        ' 25%|█████               | 1/4 done [2.00 s<6 s, 0.5/s] 1 fresh · 0 cached · 0 errors · spent $0.00'
    """
    texts = stats.texts()
    fraction = stats.done / stats.total if stats.total else 0.0
    seconds = seconds_left(stats, rate)
    left = "?" if seconds is None else formatting.whole_seconds(seconds)
    speed = f"{rate:.1f}/s" if rate else "?/s"
    counts = " · ".join(texts[name] for name in ("kura-fresh", "kura-cached", "kura-errors", "kura-spent"))
    timing = f"[{formatting.duration(stats.elapsed_s)}<{left}, {speed}]"
    return f"{fraction:4.0%}|{formatting.bar(fraction)}| {texts['kura-done']} {timing} {counts}"


def run_texts(stats: RunStats, rate: float | None, *, going: bool) -> dict[str, str]:
    """The run's pieces of text: counts and money (the saved share beside what was saved), the
    rate of calls and, while the run goes, what it waits on and the time left.

    Example:
        >>> texts = run_texts(RunStats(total=8, done=4, fresh=2, cached=2, cost=0.01, saved_cost=0.03,
        ...                            phase=RunStats.CALLING, in_flight=3), 2.0, going=True)
        >>> [texts[name] for name in ("kura-done", "kura-rate", "kura-eta", "kura-phase", "kura-saved")]
        ['4/8 done', '2.0 calls/s', 'ETA 2 s', 'calling · 3 in flight', 'saved $0.0300 (75%)']
    """
    texts = stats.model_copy(update={"phase": "", "in_flight": 0}).texts()
    if stats.saved_cost:
        texts["kura-saved"] += f" ({stats.saved_cost / (stats.saved_cost + stats.cost):.0%})"
    if rate:
        texts["kura-rate"] = f"{rate:.1f} calls/s"
    if not going:
        return texts
    texts["kura-phase"] = _phase_text(stats)
    seconds = seconds_left(stats, rate)
    if seconds is not None:
        texts["kura-eta"] = f"ETA {formatting.whole_seconds(seconds)}"
    return texts


def seconds_left(stats: RunStats, rate: float | None) -> float | None:
    """How long the calls not yet done take at `rate` per second (None: unknown, or none left).

    Example:
        >>> seconds_left(RunStats(total=10, done=4, skipped=2), 2.0)
        2.0
    """
    left = stats.total - stats.done - stats.skipped
    return left / rate if rate and left > 0 else None


def _phase_text(stats: RunStats) -> str:
    """What the run waits on: the start, the provider library, or its calls (how many are out,
    once the run has said so: it first reports the calling phase before any is sent)."""
    if stats.phase != RunStats.CALLING:
        return stats.phase or "starting…"
    return f"calling · {stats.in_flight} in flight" if stats.in_flight else "calling…"


def budget_text(stats: RunStats) -> str:
    """Why calls were skipped, said once: the budget, how many, and what one was estimated to cost.

    Example:
        >>> budget_text(RunStats(skipped=12, max_cost=0.01, skip_estimate=0.0011))
        '--max-cost $0.0100 reached: 12 calls skipped (about $0.00110 each)'
    """
    each = f" (about {formatting.money(stats.skip_estimate)} each)" if stats.skip_estimate else ""
    calls = "call" if stats.skipped == 1 else "calls"
    return f"--max-cost {formatting.money(stats.max_cost)} reached: {stats.skipped} {calls} skipped{each}"


def comparison_text(comparison: Comparison) -> str:
    """A comparison as text: what changed (prompt, settings), the caption, the hint, then the
    rows (see `comparison_table_text`).

    Example:
        >>> from kura_magic import summarise
        >>> from kura_magic.run.compare import Comparison, compare_runs
        >>> short = summarise(convs, "In five words:\\n{{ transcript }}")
        >>> long = summarise(convs, "In detail:\\n{{ transcript }}")
        >>> print(comparison_text(Comparison(compare_runs(short, long))))   # doctest: +ELLIPSIS
        a vs b: 5 of 5 conversations differ
           id        a ...b
        ≠  conv-001  Summary: In [-five words:-] ...
        >>> print(comparison_text(Comparison.of(short, long, changed_only=True)))   # doctest: +ELLIPSIS
        prompt: 2 words changed: In [-five words:-]{+detail:+}
        {{ transcript }}
        a vs b: 5 of 5 conversations differ (only those shown)
        ...
    """
    hint = comparison_hint(comparison)
    return "\n".join([*header_lines(comparison), comparison_caption(comparison), *([hint] if hint else []),
                      comparison_table_text(comparison.rows)])


def comparison_caption(comparison: Comparison) -> str:
    """One line: how many conversations differ between the two runs, and whether only those
    are shown.

    Example:
        >>> import pandas
        >>> from kura_magic.run.compare import Comparison
        >>> comparison_caption(Comparison(pandas.DataFrame({"conversation_id": ["1", "2"], "a": ["x", "y"],
        ...                                                 "b": ["x", "z"], "differs": [False, True]})))
        'a vs b: 1 of 2 conversations differ (those first)'
    """
    a, b = comparison.frame.columns[1:3]
    first = 0 < comparison.changed < comparison.both
    shown = " (only those shown)" if comparison.changed_only else " (those first)" if first else ""
    only = "; ".join(f"{count} only in {label}" for label, count in comparison.only_in.items())
    of = f" ({only}; compared: the {comparison.both} both have)" if only else ""
    return f"{a} vs {b}: {comparison.changed} of {comparison.both} conversations differ{shown}{of}"


def comparison_hint(comparison: Comparison) -> str:
    """How to see only the differing rows, when some rows are the same and all are shown.

    Example:
        >>> import pandas
        >>> from kura_magic.run.compare import Comparison
        >>> rows = {"conversation_id": ["1", "2"], "a": ["x", "y"], "b": ["x", "z"], "differs": [False, True]}
        >>> comparison_hint(Comparison(pandas.DataFrame(rows), changed_flag="%kura compare v1 v2 --changed"))
        'to see only the 1 that differs: %kura compare v1 v2 --changed'
    """
    changed = comparison.changed
    if comparison.changed_only or changed in (0, len(comparison.frame)):
        return ""
    return f"to see only the {changed} that {'differs' if changed == 1 else 'differ'}: {comparison.changed_flag}"


def setting_lines(comparison: Comparison) -> list[str]:
    """Each setting that differs, as 'name: a → b'."""
    return [f"{name}: {a} → {b}" for name, (a, b) in comparison.settings.items()]


def header_lines(comparison: Comparison) -> list[str]:
    """What changed besides the outputs: the prompt (with its word diff), then the settings."""
    prompts = comparison.prompts
    if prompts is None:
        return setting_lines(comparison)
    diff = marked_text(word_diff(*prompts)) if prompts[0] != prompts[1] else ""
    return [prompt_summary(prompts) + (f": {diff}" if diff else ""), *setting_lines(comparison)]


def runs_text(history: RunHistory) -> str:
    """The run history as a caption over a text table (see `RunHistory`)."""
    import pandas

    table = pandas.DataFrame(history.cells(), columns=history.titles)
    return history.caption + ("\n" + table.to_string(index=False) if len(table) else "")
