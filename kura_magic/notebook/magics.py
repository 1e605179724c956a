"""The IPython magics: `%%summarise` (alias `%%summarize`) and `%kura`.

A thin shell in the manner of `%%capture`: parse the arguments, call kura_magic,
bind the result in the user's namespace and return it as the cell's value. Our
errors become one-line `UsageError`s; anything else is a bug and propagates.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Enum

from kura_magic import session
from kura_magic.calls import CallOptions
from kura_magic.compare import Comparison, compare_runs
from kura_magic.config import configure, settings
from kura_magic.errors import CacheError, KuraMagicError
from kura_magic.notebook.panel import Panel, cache_table, open_panel
from kura_magic.pipeline import estimate, summarise
from kura_magic.results import Estimate, SummaryRun
from kura_magic.types import CacheMode

# --flag (as argparse names it) -> the cache mode it selects
CACHE_FLAGS: dict[str, CacheMode] = {"refresh": "refresh", "no_cache": "off", "read_only": "read_only"}
DATA_SUFFIXES = (".json", ".jsonl")
OFFLINE_WORDS = {"on": True, "off": False}
LOCAL_ACTIONS = ("start", "stop", "status")


class Note(str):
    """A short answer of `%kura`, shown as plain text (no quotes)."""

    def __repr__(self) -> str:
        return str(self)


@contextmanager
def usage_errors() -> Iterator[None]:
    """Show our errors as one line without a traceback; bugs propagate untouched."""
    try:
        yield
    except KuraMagicError as exc:
        raise UsageError(" ".join(str(exc).split())) from None


Handler = Callable[["KuraMagics", list[str], argparse.Namespace], Any]


@dataclass(frozen=True)
class Subcommand:
    """One `%kura` subcommand: how it is written, what it does, and what runs it."""

    usage: str
    summary: str
    run: Handler
    most_words: int | None = 0  # None: the handler checks its own words


def _panel(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> Panel:
    return open_panel(mode=magics.panel, run=False)


def _experiment(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> Note:
    name = session.set_experiment(words[0]) if words else session.active_experiment()
    entries = session.cache_info(name).for_experiment(name).entries
    return Note(f"active experiment: {name} ({entries} entries cached)")


def _config(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> Note:
    if words:
        configure(**dict(_setting(word) for word in words))
    values = settings().shown()
    return Note("\n".join(f"{name} = {value}" for name, value in values.items()))


def _stats(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> Any:
    info = session.cache_info()
    if info.problem is not None:
        raise CacheError(info.problem)
    return cache_table(info, session.active_experiment())


def _clear(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> Note:
    if args.all and args.experiment:
        raise UsageError("give either --experiment NAME or --all, not both")
    if args.all:
        return Note(f"cleared {session.clear_all_caches()} entries from the whole cache")
    name = args.experiment or session.active_experiment()
    return Note(f"cleared {session.clear_cache(name)} entries of experiment {name!r}")


def _offline(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> Note:
    if words and words[0] not in OFFLINE_WORDS:
        raise UsageError(f"%kura offline takes on or off, not {words[0]!r}")
    offline = configure(offline=OFFLINE_WORDS[words[0]]).offline if words else settings().offline
    if offline:
        return Note("offline mode on: runs use the cache only; a miss is an error")
    return Note("offline mode off: cache misses call the model")


def _compare(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> Comparison:
    if len(words) != 2:
        raise UsageError("%kura compare takes two run variables: %kura compare RUN_A RUN_B")
    runs = [magics.run_variable(name) for name in words]
    return Comparison(compare_runs(*runs, labels=(words[0], words[1])))


def _local(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> Note:
    if len(words) != 1 or words[0] not in LOCAL_ACTIONS:
        raise UsageError(f"use %kura local {'|'.join(LOCAL_ACTIONS)}")
    from kura_magic import local  # standard library only; the [local] extra is checked by start()

    if words[0] == "start":
        started = local.start()
        return Note(f"local model {started.model} serving at {started.url}; it is now this session's model")
    if words[0] == "stop":
        return Note("stopped the local model" if local.stop() else "no local model was running")
    running = local.status()
    return Note("no local model is running" if running is None else f"local model {running.model} at {running.url}")


SUBCOMMANDS: dict[str, Subcommand] = {
    "panel": Subcommand("%kura", "the cache panel", _panel),
    "experiment": Subcommand("%kura experiment [NAME]", "show, or switch to, the active experiment", _experiment, 1),
    "config": Subcommand("%kura config [key=value ...]", "show the settings, or set some (key= removes an override)", _config, None),
    "stats": Subcommand("%kura stats", "entries and size per experiment", _stats),
    "clear": Subcommand("%kura clear [--experiment NAME | --all]", "clear one experiment (default: active) or all", _clear),
    "offline": Subcommand("%kura offline on|off", "forbid (or allow) calls; misses become errors", _offline, 1),
    "compare": Subcommand("%kura compare RUN_A RUN_B", "two runs' outputs side by side, differences marked", _compare, None),
    "local": Subcommand("%kura local start|stop|status", "the bundled local model", _local, None),
}


def _with_subcommand_help(function: Callable[..., Any]) -> Callable[..., Any]:
    """Append the table of subcommands to `%kura`'s docstring (and so to `%kura?`)."""
    width = max(len(sub.usage) for sub in SUBCOMMANDS.values())
    lines = [f"{sub.usage.ljust(width)}   {sub.summary}" for sub in SUBCOMMANDS.values()]
    function.__doc__ = f"{function.__doc__}\n" + "\n".join(lines) + "\n"
    return function


@magics_class
class KuraMagics(Magics):
    """`%%summarise` and `%kura`. Set `%config KuraMagics.panel = 'text'` to force the text panel."""

    panel = Enum(
        ["auto", "widgets", "text"], default_value="auto",
        help="How runs show the cache panel: 'auto' (widgets in Jupyter, else text), 'widgets' or 'text'.",
    ).tag(config=True)

    @magic_arguments(name="%summarise")  # the help's usage line then reads %%summarise
    @argument("data", help="a variable holding conversations (list, DataFrame) or a .json/.jsonl path")
    @argument("--out", default="summaries", help="variable to bind the run to (default: summaries)")
    @argument("--model", help="litellm model name, e.g. openai/gpt-4o-mini (default: KURA_MAGIC_MODEL)")
    @argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0)")
    @argument("--max-tokens", type=int, help="longest reply, in tokens")
    @argument("--schema", help="a pydantic model in the notebook, or KuraSummary, for structured output")
    @argument("--experiment", help="cache experiment for this run (default: the active one)")
    @argument("--max-concurrency", type=int, help="most calls in flight for this run")
    @argument("--max-cost", type=float, help="stop starting fresh calls once this many dollars would be spent")
    @argument("--limit", type=int, help="only the first N conversations")
    @argument("--refresh", action="store_true", help="call again and overwrite the cache")
    @argument("--no-cache", action="store_true", help="neither read nor write the cache")
    @argument("--read-only", action="store_true", help="read the cache, never write it")
    @argument("--dry-run", action="store_true", help="tell how many calls would be fresh and their cost; call nothing")
    @cell_magic("summarize")
    @cell_magic
    def summarise(self, line: str, cell: str) -> SummaryRun | Estimate:
        """Summarise each conversation of DATA with the cell's prompt, paying only for what changed.

        The cell is a Jinja2 template that sees `transcript`, `conversation` and
        the notebook's variables. The run is the cell's value and is bound to --out.

        Example::

            %%summarise conversations --out v1
            Summarise this support chat in one sentence:
            {{ transcript }}
        """
        args = parse_argstring(self.summarise, line)
        if not args.out.isidentifier():
            raise UsageError(f"--out {args.out!r} is not a Python variable name")
        data, options = self._data(args.data), _call_options(args)
        scope: dict[str, Any] = {"limit": args.limit, "variables": self.shell.user_ns}
        with usage_errors():
            if args.dry_run:
                return estimate(data, cell, **scope, **options)
            run = self._run(data, cell, args, scope, options)
        self.shell.user_ns[args.out] = run
        return run

    def _data(self, name: str) -> Any:
        """DATA: a variable of the notebook, else a path to a JSON/JSONL file."""
        if name in self.shell.user_ns:
            return self.shell.user_ns[name]
        if Path(name).suffix.lower() in DATA_SUFFIXES:
            return name
        raise UsageError(
            f"no variable named {name!r}: define it in the notebook (a list of conversations, "
            "dicts or strings, or a DataFrame), or give a path to a .json/.jsonl file"
        )

    def _run(
        self, data: Any, prompt: str, args: argparse.Namespace, scope: dict[str, Any],
        options: CallOptions,
    ) -> SummaryRun:
        """The run with the panel live beside it; the panel stays, showing how it ended."""
        panel = open_panel(mode=self.panel, experiment=args.experiment)
        panel.start()
        try:
            run = summarise(
                data, prompt, **scope, max_cost=args.max_cost, max_concurrency=args.max_concurrency,
                on_progress=panel.update, **options,
            )
        except BaseException as exc:  # ours, a bug or an interrupt: the panel turns red, buttons back
            panel.fail(_failure_text(exc))
            raise
        panel.finish(run.stats)
        return run

    @magic_arguments()
    @argument("command", nargs="?", default="panel", help=f"one of: {', '.join(SUBCOMMANDS)}")
    @argument("words", nargs="*", help="the subcommand's arguments")
    @argument("--experiment", help="clear: the experiment to clear (default: the active one)")
    @argument("--all", action="store_true", help="clear: clear the whole cache")
    @line_magic
    @_with_subcommand_help
    def kura(self, line: str = "") -> Any:
        """Look at and manage the cache and the session:
        """
        args = parse_argstring(self.kura, line)
        subcommand = SUBCOMMANDS.get(args.command)
        if subcommand is None:
            raise UsageError(f"unknown %kura subcommand {args.command!r}: use one of {', '.join(SUBCOMMANDS)}")
        if (args.experiment or args.all) and args.command != "clear":
            raise UsageError("--experiment and --all go with %kura clear only")
        if subcommand.most_words is not None and len(args.words) > subcommand.most_words:
            raise UsageError(f"too many arguments ({' '.join(args.words)}): use {subcommand.usage}")
        with usage_errors():
            return subcommand.run(self, args.words, args)

    def run_variable(self, name: str) -> SummaryRun:
        """The run bound to `name` in the notebook, or a UsageError saying what it is instead."""
        value = self.shell.user_ns.get(name)
        if not isinstance(value, SummaryRun):
            what = "not defined" if value is None else f"a {type(value).__name__}"
            raise UsageError(f"{name!r} is {what}, not a run: bind one with %%summarise DATA --out {name}")
        return value


def _failure_text(exc: BaseException) -> str:
    """What the panel says about a run that raised."""
    if isinstance(exc, KuraMagicError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted before any call was made"
    return f"{type(exc).__name__}: {exc}"


def _call_options(args: argparse.Namespace) -> CallOptions:
    """The flags that name `CallOptions`, under the core's names."""
    return CallOptions(
        model=args.model, temperature=args.temperature, max_tokens=args.max_tokens,
        schema=args.schema, experiment=args.experiment, cache_mode=_cache_mode(args),
    )


def _cache_mode(args: argparse.Namespace) -> CacheMode:
    chosen = [flag for flag in CACHE_FLAGS if getattr(args, flag)]
    if len(chosen) > 1:
        flags = " and ".join("--" + flag.replace("_", "-") for flag in chosen)
        raise UsageError(f"{flags} contradict each other: give at most one")
    return CACHE_FLAGS[chosen[0]] if chosen else "read_write"


def _setting(word: str) -> tuple[str, str | None]:
    """`key=value` of `%kura config`; an empty value (`key=`) removes the override."""
    key, equals, value = word.partition("=")
    if not equals or not key:
        raise UsageError(f"%kura config takes key=value pairs, not {word!r}")
    return key, value or None


def register(ipython: Any) -> None:
    """Register the magics with `ipython` (what `%load_ext kura_magic` does).

    Example:
        >>> from IPython.core.interactiveshell import InteractiveShell
        >>> register(InteractiveShell.instance())
        >>> cell_magics = InteractiveShell.instance().magics_manager.magics["cell"]
        >>> "summarise" in cell_magics, "summarize" in cell_magics
        (True, True)
    """
    ipython.register_magics(KuraMagics)
