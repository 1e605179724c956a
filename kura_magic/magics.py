"""The IPython magics: `%%summarise` (alias `%%summarize`) and `%kura`.

A thin shell in the manner of `%%capture`: parse the arguments, call kura_magic,
bind the result in the user's namespace and return it as the cell's value. Our
errors become one-line `UsageError`s; anything else is a bug and propagates.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Enum

from kura_magic import session
from kura_magic.calls import CacheMode
from kura_magic.compare import Comparison, compare_runs
from kura_magic.config import configure, settings
from kura_magic.errors import KuraMagicError
from kura_magic.panel import Panel, cache_table, open_panel
from kura_magic.pipeline import summarise
from kura_magic.results import DryRun, SummaryRun

# --flag (as argparse names it) -> the cache mode it selects
CACHE_FLAGS: dict[str, CacheMode] = {"refresh": "refresh", "no_cache": "off", "read_only": "read_only"}
DATA_SUFFIXES = (".json", ".jsonl")
OFFLINE_WORDS = {"on": True, "off": False}


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
    def summarise(self, line: str, cell: str) -> SummaryRun | DryRun:
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
        data = self._data(args.data)
        with usage_errors():
            options = self._run_options(args)
            if args.dry_run:
                return summarise(data, cell, dry_run=True, **options)
            run = self._run(data, cell, options)
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

    def _run_options(self, args: argparse.Namespace) -> dict[str, Any]:
        return {
            "model": args.model, "temperature": args.temperature, "max_tokens": args.max_tokens,
            "schema": args.schema, "experiment": args.experiment, "max_cost": args.max_cost,
            "max_concurrency": args.max_concurrency, "limit": args.limit,
            "cache_mode": _cache_mode(args), "variables": self.shell.user_ns,
        }

    def _run(self, data: Any, prompt: str, options: dict[str, Any]) -> SummaryRun:
        """The run with the panel live beside it; the panel stays, showing how it ended."""
        panel = open_panel(mode=self.panel, experiment=options["experiment"])
        panel.start()
        try:
            run = summarise(data, prompt, on_progress=panel.update, **options)
        except KuraMagicError as exc:
            panel.fail(str(exc))
            raise
        panel.finish(run.stats)
        return run

    @magic_arguments()
    @argument("command", nargs="?", default="panel",
              help="panel (default), experiment, config, stats, clear, offline, compare or local")
    @argument("words", nargs="*", help="the subcommand's arguments")
    @argument("--experiment", help="clear: the experiment to clear (default: the active one)")
    @argument("--all", action="store_true", help="clear: clear the whole cache")
    @line_magic
    def kura(self, line: str = "") -> Any:
        """Look at and manage the cache and the session.

        %kura                        the cache panel
        %kura experiment [NAME]      show, or switch to, the active experiment
        %kura config [key=value ...] show the settings, or set some (key= removes an override)
        %kura stats                  entries and size per experiment
        %kura clear [--experiment NAME | --all]   clear one experiment (default: active) or all
        %kura offline on|off         forbid (or allow) calls; misses become errors
        %kura compare RUN_A RUN_B    two runs' outputs side by side, differences marked
        %kura local start|stop|status   the bundled local model
        """
        args = parse_argstring(self.kura, line)
        handler = SUBCOMMANDS.get(args.command)
        if handler is None:
            raise UsageError(
                f"unknown %kura subcommand {args.command!r}: use one of {', '.join(SUBCOMMANDS)}"
            )
        if (args.experiment or args.all) and args.command != "clear":
            raise UsageError("--experiment and --all go with %kura clear only")
        with usage_errors():
            return handler(self, args.words, args)

    def _panel(self, words: list[str], args: argparse.Namespace) -> Panel:
        _arity(words, 0, "%kura")
        return open_panel(mode=self.panel, run=False)

    def _experiment(self, words: list[str], args: argparse.Namespace) -> Note:
        _arity(words, 1, "%kura experiment [NAME]")
        if words:
            session.experiment(words[0])
        name = session.active_experiment()
        entries = session.cache_info(name).for_experiment(name).entries
        return Note(f"active experiment: {name} ({entries} entries cached)")

    def _config(self, words: list[str], args: argparse.Namespace) -> Note:
        if words:
            configure(**dict(_setting(word) for word in words))
        values = settings().model_dump(mode="json")  # a SecretStr dumps as '**********'
        return Note("\n".join(f"{name} = {value}" for name, value in values.items()))

    def _stats(self, words: list[str], args: argparse.Namespace) -> Any:
        _arity(words, 0, "%kura stats")
        return cache_table(session.cache_info(), session.active_experiment())

    def _clear(self, words: list[str], args: argparse.Namespace) -> Note:
        _arity(words, 0, "%kura clear [--experiment NAME | --all]")
        if args.all and args.experiment:
            raise UsageError("give either --experiment NAME or --all, not both")
        if args.all:
            return Note(f"cleared {session.clear_cache(all=True)} entries from the whole cache")
        name = args.experiment or session.active_experiment()
        return Note(f"cleared {session.clear_cache(name)} entries of experiment {name!r}")

    def _offline(self, words: list[str], args: argparse.Namespace) -> Note:
        _arity(words, 1, "%kura offline on|off")
        if words and words[0] not in OFFLINE_WORDS:
            raise UsageError(f"%kura offline takes on or off, not {words[0]!r}")
        offline = configure(offline=OFFLINE_WORDS[words[0]]).offline if words else settings().offline
        if offline:
            return Note("offline mode on: runs use the cache only; a miss is an error")
        return Note("offline mode off: cache misses call the model")

    def _compare(self, words: list[str], args: argparse.Namespace) -> Comparison:
        if len(words) != 2:
            raise UsageError("%kura compare takes two run variables: %kura compare RUN_A RUN_B")
        runs = [self._run_variable(name) for name in words]
        return Comparison(compare_runs(*runs, labels=(words[0], words[1])))

    def _run_variable(self, name: str) -> SummaryRun:
        value = self.shell.user_ns.get(name)
        if not isinstance(value, SummaryRun):
            what = "not defined" if value is None else f"a {type(value).__name__}"
            raise UsageError(f"{name!r} is {what}, not a run: bind one with %%summarise DATA --out {name}")
        return value

    def _local(self, words: list[str], args: argparse.Namespace) -> Note:
        if len(words) != 1 or words[0] not in LOCAL_ANSWERS:
            raise UsageError(f"use %kura local {'|'.join(LOCAL_ANSWERS)}")
        from kura_magic import local  # standard library only; the [local] extra is checked by start()

        return LOCAL_ANSWERS[words[0]](local)


def _local_start(local: ModuleType) -> Note:
    server = local.start()
    return Note(f"local model {server.model} serving at {server.url}; it is now this session's model")


def _local_status(local: ModuleType) -> Note:
    server = local.status()
    return Note("no local model is running" if server is None else f"local model {server.model} at {server.url}")


def _local_stop(local: ModuleType) -> Note:
    return Note("stopped the local model" if local.stop() else "no local model was running")


LOCAL_ANSWERS: dict[str, Callable[[ModuleType], Note]] = {
    "start": _local_start, "stop": _local_stop, "status": _local_status,
}
SUBCOMMANDS: dict[str, Callable[[KuraMagics, list[str], argparse.Namespace], Any]] = {
    "panel": KuraMagics._panel, "experiment": KuraMagics._experiment, "config": KuraMagics._config,
    "stats": KuraMagics._stats, "clear": KuraMagics._clear, "offline": KuraMagics._offline,
    "compare": KuraMagics._compare, "local": KuraMagics._local,
}


def _cache_mode(args: argparse.Namespace) -> CacheMode:
    chosen = [flag for flag in CACHE_FLAGS if getattr(args, flag)]
    if len(chosen) > 1:
        flags = " and ".join("--" + flag.replace("_", "-") for flag in chosen)
        raise UsageError(f"{flags} contradict each other: give at most one")
    return CACHE_FLAGS[chosen[0]] if chosen else "read_write"


def _arity(words: list[str], most: int, usage: str) -> None:
    if len(words) > most:
        raise UsageError(f"too many arguments ({' '.join(words)}): use {usage}")


def _setting(word: str) -> tuple[str, str | None]:
    """`key=value` of `%kura config`; an empty value (`key=`) removes the override."""
    key, equals, value = word.partition("=")
    if not equals or not key:
        raise UsageError(f"%kura config takes key=value pairs, not {word!r}")
    return key, value or None


def register(ipython: Any) -> None:
    """Register the magics with `ipython` (what `%load_ext kura_magic` does).

    Example:
        >>> from IPython.testing.globalipapp import get_ipython   # doctest: +SKIP
        >>> register(get_ipython())                                # doctest: +SKIP
    """
    ipython.register_magics(KuraMagics)
