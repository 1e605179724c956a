"""The IPython magics: `%%summarise` (alias `%%summarize`) and `%kura`.

A thin shell in the manner of `%%capture`: parse the arguments, call kura_magic,
bind the result in the user's namespace and return it as the cell's value. Our
errors (and mistakes in the magic's arguments) become a `FailureCard` (`cards`): a
`UsageError` shown as a compact red card, no traceback; anything else is a bug and propagates.
"""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display
from traitlets import Enum

from kura_magic import formatting
from kura_magic.calls.calls import CallOptions
from kura_magic.config import ENV_VARS, Settings, configure, settings
from kura_magic.errors import CacheError, DataError, KuraMagicError
from kura_magic.notebook.cards import RunInterrupted, usage_errors
from kura_magic.notebook.panels import CachePanel, open_cache_panel, open_run_panel
from kura_magic.notebook.sweep_panel import is_sweep, numbers, run_sweep
from kura_magic.run import history, session
from kura_magic.run.batch_mode import batches_of, poll_batches
from kura_magic.run.compare import Comparison
from kura_magic.run.pipeline import estimate, summarise
from kura_magic.run.results import Estimate, SummaryRun
from kura_magic.run.sweep import Sweep
from kura_magic.types import CacheMode
from kura_magic.views.batches import BatchTable
from kura_magic.views.history import RunHistory
from kura_magic.views.text import cache_table

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

# --flag (as argparse names it) -> the cache mode it selects
CACHE_FLAGS: dict[str, CacheMode] = {"refresh": "refresh", "no_cache": "off", "read_only": "read_only"}
DATA_SUFFIXES = (".json", ".jsonl")
OFFLINE_WORDS = {"on": True, "off": False}
LOCAL_ACTIONS = ("start", "stop", "status")


class Note(str):
    """A short answer of `%kura`, shown as plain text (no quotes)."""

    def __repr__(self) -> str:
        return str(self)


def parse_flags(magic: Callable[..., Any], line: str) -> argparse.Namespace:
    """The magic's arguments; a mistyped flag is refused naming the flags it may have meant.

    Example:
        >>> parse_flags(KuraMagics.summarise, "convs --temprature 0.5")
        Traceback (most recent call last):
        IPython.core.error.UsageError: unrecognized arguments: --temprature 0.5 (did you mean --temperature?)
    """
    try:
        return parse_argstring(magic, line)
    except UsageError as exc:
        unknown = [word for word in line.split() if word.startswith("--")]
        flags = [flag for action in magic.parser._actions for flag in action.option_strings]  # type: ignore[attr-defined]
        close = [m for word in unknown if word not in flags for m in difflib.get_close_matches(word, flags, n=1)]
        if not close:
            raise
        raise UsageError(f"{exc} (did you mean {' or '.join(close)}?)") from None



Handler = Callable[["KuraMagics", list[str], argparse.Namespace], Any]


@dataclass(frozen=True)
class Subcommand:
    """One `%kura` subcommand: how it is written, what it does, and what runs it."""

    usage: str
    summary: str
    run: Handler
    most_words: int | None = 0  # None: the handler checks its own words


def _panel(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> CachePanel:
    return open_cache_panel(mode=magics.panel)


def _experiment(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> Note:
    name = session.set_experiment(words[0]) if words else session.active_experiment()
    entries = session.cache_info(name).for_experiment(name).entries
    return Note(f"active experiment: {name} ({entries} entries cached)")


def _config(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> Note:
    if words:
        configure(**dict(_setting(word) for word in words))
    return Note("\n".join(config_lines(settings(), os.environ)))


# Settings litellm fills from its own variables when ours leave them unset.
LITELLM_VARS = {"api_key": "OPENAI_API_KEY", "api_base": "OPENAI_API_BASE"}
SIZES = ("cache_size_limit", "embedding_size_limit")


def config_lines(current: Settings, environ: Mapping[str, str]) -> list[str]:
    """`%kura config`: each setting in effect, sizes in human units, secrets masked, and where it
    came from: the default, an environment variable, or `%kura config` (`configure()`).

    Example:
        >>> lines = config_lines(Settings(max_concurrency=3), {"OPENAI_API_KEY": "sk-secret"})
        >>> [line for line in lines if line.startswith(("max_conc", "api_key", "cache_size"))]
        ['cache_size_limit = 5.0 GiB  (default)', 'max_concurrency = 3  (%kura config)', 'api_key = **********  (OPENAI_API_KEY, read by litellm)']
    """
    from_env = {field: environ[var] for field, var in ENV_VARS.items() if environ.get(var, "").strip()}
    baseline = Settings.model_validate(from_env)
    lines = []
    for name, value in current.shown().items():
        source = ENV_VARS[name] if name in from_env else "default"
        source = "%kura config" if getattr(current, name) != getattr(baseline, name) else source
        if value is None and environ.get(LITELLM_VARS.get(name, ""), "").strip():
            value, source = _litellm_value(name, environ), f"{LITELLM_VARS[name]}, read by litellm"
        shown = formatting.size(value) if name in SIZES else value
        lines.append(f"{name} = {shown}  ({source})")
    return lines


def _litellm_value(name: str, environ: Mapping[str, str]) -> str:
    """What litellm reads for setting `name`, masked as our own are (`Settings.shown`)."""
    return str(Settings.model_validate({name: environ[LITELLM_VARS[name]]}).shown()[name])


def _stats(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> Any:
    info = session.cache_info()
    if info.problem is not None:
        raise CacheError(info.problem)
    return cache_table(info, session.active_experiment())


def _clear(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> Note:
    if args.all and (args.experiment or args.model):
        raise UsageError(f"give either --{'experiment NAME' if args.experiment else 'model M'} or --all, not both")
    if args.history and not args.all:
        raise UsageError("--history goes with --all: %kura clear --all --history clears the cache and the run history")
    busy = session.in_use_elsewhere()
    warning = f"\nnote: {busy}" if busy else ""
    if args.all:
        runs = len(history.records()) if args.history else 0
        removed = session.clear_all_caches(history=args.history)
        kept = f" and {runs} recorded runs" if args.history else "; the run history is kept (--history clears it too)"
        return Note(f"cleared {removed} entries from the whole cache{kept}{warning}")
    if args.model:
        removed = session.clear_model(args.model, args.experiment)
        where = f"experiment {args.experiment!r}" if args.experiment else "every experiment"
        return Note(f"cleared {removed} entries of model {args.model!r} from {where}{warning}")
    name = args.experiment or session.active_experiment()
    return Note(f"cleared {session.clear_cache(name)} entries of experiment {name!r}{warning}")


def _prune(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> Note:
    freed = session.prune()
    return Note(f"pruned {freed.entries} expired entries, freeing {formatting.size(freed.bytes)}")


def _offline(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> Note:
    if words and words[0] not in OFFLINE_WORDS:
        raise UsageError(f"%kura offline takes on or off, not {words[0]!r}")
    offline = configure(offline=OFFLINE_WORDS[words[0]]).offline if words else settings().offline
    if offline:
        return Note("offline mode on: runs use the cache only; a miss is an error")
    return Note("offline mode off: cache misses call the model")


def _compare(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> Comparison:
    if len(words) != 2:
        raise UsageError("%kura compare takes two runs: %kura compare RUN_A RUN_B, each a run "
                         "variable, an --out name, a run id, or -1 (the latest), -2, ...")
    a, b = (magics.run_ref(word) for word in words)
    comparison = history.compare(a, b, changed_only=args.changed)
    comparison.changed_flag = f"%kura compare {words[0]} {words[1]} --changed"
    return comparison


def _runs(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> RunHistory:
    if words and not words[0].isdigit():
        raise UsageError(f"%kura runs takes how many of the latest runs to show, not {words[0]!r}")
    last = int(words[0]) if words else None
    everything = history.runs(experiment=args.experiment, prompt=args.prompt)
    return RunHistory(everything.tail(last) if last else everything, recorded=len(everything))


def _batches(magics: KuraMagics, words: list[str], args: argparse.Namespace) -> BatchTable:
    if words and (words[0] != "cancel" or len(words) != 2):
        raise UsageError("use %kura batches, or %kura batches cancel BATCH_ID")
    return BatchTable(poll_batches(cancel=words[1] if words else None))


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
    "clear": Subcommand("%kura clear [--experiment NAME | --all [--history] | --model M]",
                        "clear one experiment (default: active) or all; --history: the run history too; "
                        "--model: one model's entries (of --experiment, else of all)", _clear),
    "prune": Subcommand("%kura prune", "remove the entries whose age limit (cache_ttl) has passed", _prune),
    "offline": Subcommand("%kura offline on|off", "forbid (or allow) calls; misses become errors", _offline, 1),
    "runs": Subcommand("%kura runs [N] [--experiment NAME] [--prompt HASH]", "the run history (the latest N)", _runs, 1),
    "compare": Subcommand("%kura compare RUN_A RUN_B [--changed]", "prompt diff, then outputs side by side (a run is "
                          "a variable, an --out name, a run id, or -1, -2, ...)", _compare, None),
    "local": Subcommand("%kura local start|stop|status", "the bundled local model", _local, None),
    "batches": Subcommand("%kura batches [cancel BATCH_ID]", "poll the provider batches "
                          "(--batch runs), collect the finished ones, show their state and cost", _batches, 2),
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
    @argument("--model", help="litellm model name, e.g. openai/gpt-4o-mini (default: KURA_MAGIC_MODEL); "
              "a comma list (a,b,c) sweeps the models")
    @argument("--temperature", type=numbers, default=[0.0], help="sampling temperature (default 0); "
              "a comma list (0,0.7) sweeps them")
    @argument("--samples", type=int, default=1, help="a sweep: this many generations per conversation and variant")
    @argument("--scorer", help="a sweep: a function (conversation, output) -> number, or a judge prompt "
              "string using {{ output }}, of the notebook")
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
    @argument("--batch", action="store_true", help="send the misses as one provider batch, at the batch price; "
              "run the cell again (or %%kura batches) to collect what it has finished")
    @cell_magic("summarize")  # type: ignore[arg-type]  # IPython types cell_magic("name") as (Never) -> Never
    @cell_magic
    @usage_errors()
    def summarise(self, line: str, cell: str) -> SummaryRun | Estimate | Sweep:
        """Summarise each conversation of DATA with the cell's prompt, paying only for what changed.

        The cell is a Jinja2 template that sees `transcript`, `conversation` and
        the notebook's variables. The run is the cell's value and is bound to --out.

        Example::

            %%summarise conversations --out v1
            Summarise this support chat in one sentence:
            {{ transcript }}
        """
        args = parse_flags(self.summarise, line)
        if not args.out.isidentifier():
            raise UsageError(f"--out {args.out!r} is not a Python variable name")
        data, options = self._data(args.data), _call_options(args)
        if is_sweep(args, cell):  # a comma list, samples, a scorer or `### variant:` lines
            if args.batch:
                raise UsageError("--batch goes with a plain run, not a sweep: run each variant with --batch")
            result = run_sweep(data, cell, args, user_ns=self._shell.user_ns, mode=self.panel, options=options,
                               where=self._cell())
            self._shell.user_ns[args.out] = result
            if result.interrupted:
                display(result)  # the partial sweep; then the interrupt goes on to Jupyter
                raise RunInterrupted(f"interrupted: the sweep is bound to {args.out}; every finished call is "
                                     "cached, so running the cell again pays only for the rest")
            return result
        scope: dict[str, Any] = {"limit": args.limit, "variables": self._shell.user_ns}
        if args.dry_run:
            return estimate(data, cell, **scope, **options)
        run = self._run(data, cell, args, scope, options)
        self._shell.user_ns[args.out] = run
        if run.stats.interrupted:
            display(run)  # the partial run; then the interrupt goes on to Jupyter
            raise RunInterrupted(
                f"interrupted: {run.stats.done} of {run.stats.total} done, bound to {args.out}; "
                "every finished call is cached, so running the cell again pays only for the rest"
            )
        return run

    @property
    def _shell(self) -> InteractiveShell:
        """The IPython shell the magics serve; magics made without one cannot bind or read variables."""
        if self.shell is None:
            raise KuraMagicError("the kura_magic magics have no IPython shell: load them in IPython "
                                 "or Jupyter with %load_ext kura_magic")
        return self.shell

    def _data(self, name: str) -> Any:
        """DATA: a variable of the notebook, else a path to a JSON/JSONL file."""
        if name in self._shell.user_ns:
            return self._shell.user_ns[name]
        if Path(name).suffix.lower() in DATA_SUFFIXES:
            return name
        raise DataError(
            f"no variable named {name!r}: define it in the notebook (a list of conversations, "
            "dicts or strings, or a DataFrame), or give a path to a .json/.jsonl file"
        )

    def _run(
        self, data: Any, prompt: str, args: argparse.Namespace, scope: dict[str, Any],
        options: CallOptions,
    ) -> SummaryRun:
        """The run with the panel live beside it from the run's first report, so a run that fails
        its checks shows only its card; the panel stays, showing how the run ended."""
        panel = open_run_panel(mode=self.panel, experiment=args.experiment)
        panel.start()
        try:
            run = summarise(
                data, prompt, **scope, max_cost=args.max_cost, max_concurrency=args.max_concurrency,
                on_progress=panel.update, label=args.out, cell=self._cell(), batch=args.batch, **options,
            )
        except BaseException as exc:  # ours, a bug or an interrupt: the panel turns red, buttons back
            panel.fail(_failure_text(exc))
            raise
        panel.finish(run.stats, changes=run.changes)  # the run's own text/plain has the table
        if args.batch:
            display(BatchTable(batches_of(run)))
        return run

    def _cell(self) -> str:
        """Where the run happens, for the history: the notebook (Jupyter names it to the kernel)
        and the cell's execution count."""
        notebook = os.path.basename(os.environ.get("JPY_SESSION_NAME", ""))
        count = self._shell.execution_count - 1  # IPython counts the running cell before it runs
        return " ".join(part for part in (notebook, f"In [{count}]" if count > 0 else "") if part)

    @magic_arguments()
    @argument("command", nargs="?", default="panel", help=f"one of: {', '.join(SUBCOMMANDS)}")
    @argument("words", nargs="*", help="the subcommand's arguments")
    @argument("--experiment", help="clear: the experiment to clear (default: the active one); runs: only its runs")
    @argument("--all", action="store_true", help="clear: clear the whole cache (the run history stays)")
    @argument("--history", action="store_true", help="clear --all: the run history too")
    @argument("--model", help="clear: only this model's entries (every experiment unless --experiment)")
    @argument("--prompt", help="runs: only runs of this prompt hash")
    @argument("--changed", action="store_true", help="compare: show only the conversations whose output changed")
    @line_magic
    @_with_subcommand_help
    @usage_errors()
    def kura(self, line: str = "") -> Any:
        """Look at and manage the cache and the session:
        """
        args = parse_flags(self.kura, line)
        subcommand = SUBCOMMANDS.get(args.command)
        if subcommand is None:
            raise UsageError(f"unknown %kura subcommand {args.command!r}: use one of {', '.join(SUBCOMMANDS)}")
        _check_flags(args)
        if subcommand.most_words is not None and len(args.words) > subcommand.most_words:
            raise UsageError(f"too many arguments ({' '.join(args.words)}): use {subcommand.usage}")
        return subcommand.run(self, args.words, args)

    def run_ref(self, word: str) -> SummaryRun | str:
        """The run bound to `word` in the notebook; else `word` names a recorded run (see
        `history.find_record`). A variable that holds something else is a UsageError."""
        if word not in self._shell.user_ns:
            return word
        value = self._shell.user_ns[word]
        if not isinstance(value, SummaryRun):
            raise UsageError(f"{word!r} is a {type(value).__name__}, not a run: bind one with "
                             f"%%summarise DATA --out {word}")
        return value


# flag -> the subcommands it goes with
FLAG_USES = {"experiment": ("clear", "runs"), "all": ("clear",), "prompt": ("runs",), "changed": ("compare",),
             "model": ("clear",)}


def _check_flags(args: argparse.Namespace) -> None:
    """A flag given to a subcommand it does not go with is a UsageError naming where it goes."""
    for flag, commands in FLAG_USES.items():
        if getattr(args, flag) and args.command not in commands:
            raise UsageError(f"--{flag} goes with %kura {' and '.join(commands)} only")


def _failure_text(exc: BaseException) -> str:
    """What the panel says about a run that raised."""
    if isinstance(exc, KuraMagicError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"


def _call_options(args: argparse.Namespace) -> CallOptions:
    """The flags that name `CallOptions`, under the core's names."""
    return CallOptions(
        model=args.model, temperature=args.temperature[0], max_tokens=args.max_tokens,
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
