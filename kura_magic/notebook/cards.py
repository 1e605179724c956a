"""The red card a mistake is shown as in a notebook or a terminal: our errors (and mistakes
in a magic's arguments) become a `FailureCard`, a `UsageError` IPython shows without a
traceback; anything else is a bug and propagates."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager

from IPython.core.error import UsageError

from kura_magic.errors import (
    AuthenticationError,
    BudgetError,
    CacheError,
    CacheMissError,
    ConfigError,
    DataError,
    KuraMagicError,
    LocalModelError,
    MissingAPIKeyError,
    ModelError,
    ResponseError,
    SchemaError,
    TemplateError,
    UnknownModelError,
)

# The first line of a failure's card: what kind of mistake it is (the most specific class wins).
ERROR_KINDS: dict[type[Exception], str] = {
    TemplateError: "template error", DataError: "data error", SchemaError: "schema error",
    MissingAPIKeyError: "missing API key", AuthenticationError: "API key rejected",
    UnknownModelError: "unknown model", ModelError: "model error", BudgetError: "budget error",
    CacheMissError: "not in the cache", CacheError: "cache error", ConfigError: "setting error",
    LocalModelError: "local model error", ResponseError: "no answer", KuraMagicError: "kura_magic error",
}


CARD_WIDTH = 100


# ANSI: the kind white on red, the card's edge red; JupyterLab and terminals render these.
KIND_STYLE, EDGE_STYLE, RESET = "\x1b[1;97;41m", "\x1b[31m", "\x1b[0m"


class FailureCard(UsageError):
    """A mistake (ours or in the magic's arguments) shown as a compact red card: its kind,
    then the message; no traceback. Still an exception, so "Run All" stops at the cell.

    Example:
        >>> FailureCard("Summarise {{ transcript: unexpected end", kind="template error").card(colour=False)
        ['✖ template error', '│ Summarise {{ transcript: unexpected end']
    """

    def __init__(self, message: str, *, kind: str = "usage error") -> None:
        super().__init__(message)
        self.kind = kind

    def card(self, *, colour: bool) -> list[str]:
        """The card's lines: the kind, then the message wrapped beside a red edge."""
        lines = textwrap.wrap(str(self), CARD_WIDTH) or [""]
        if not colour:
            return [f"✖ {self.kind}", *(f"│ {line}" for line in lines)]
        return [f"{KIND_STYLE} ✖ {self.kind} {RESET}", *(f"{EDGE_STYLE}│{RESET} {line}" for line in lines)]

    def _render_traceback_(self) -> list[str]:
        """What IPython and ipykernel show instead of a traceback (`--colors=NoColor`: no ANSI)."""
        from IPython import get_ipython

        shell = get_ipython()
        return self.card(colour=str(getattr(shell, "colors", "")).lower() != "nocolor")


def error_kind(exc: KuraMagicError) -> str:
    """The kind a card names for one of our errors.

    Example:
        >>> error_kind(MissingAPIKeyError("no API key")), error_kind(ConfigError("bad value"))
        ('missing API key', 'setting error')
    """
    return next(ERROR_KINDS[cls] for cls in type(exc).__mro__ if cls in ERROR_KINDS)


@contextmanager
def usage_errors() -> Iterator[None]:
    """Show our errors, and IPython's usage errors, as a card without a traceback; bugs
    propagate untouched. Used as a decorator on the magics.
    """
    try:
        yield
    except KuraMagicError as exc:
        raise FailureCard(" ".join(str(exc).split()), kind=error_kind(exc)) from None
    except UsageError as exc:
        if isinstance(exc, FailureCard):
            raise
        raise FailureCard(" ".join(str(exc).split())) from None


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (Kernel › Interrupt) during a `%%summarise`: shown as one line under the partial
    run, and still an interrupt, so Jupyter stops a "Run All" at this cell.

    Example:
        >>> RunInterrupted("interrupted: 3 of 9 done")._render_traceback_()
        ['■ interrupted: 3 of 9 done']
    """

    def _render_traceback_(self) -> list[str]:
        return [f"■ {self}"]
