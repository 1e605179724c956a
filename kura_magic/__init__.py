"""kura_magic: cached LLM experimentation for Jupyter.

`%load_ext kura_magic` adds the `%%summarise` and `%kura` magics; the same work is
available as plain functions. Importing this package imports neither IPython,
ipywidgets nor litellm.

Example:
    >>> import kura_magic
    >>> kura_magic.cache_key(model="openai/gpt-4o-mini", messages=[]).startswith("km2-")
    True
"""

from __future__ import annotations

from typing import Any

from kura_magic.config import configure
from kura_magic.errors import (
    BudgetError,
    CacheError,
    CacheWarning,
    ConfigError,
    DataError,
    KuraMagicError,
    ModelError,
    ResponseError,
)
from kura_magic.inputs.loaders import load_conversations
from kura_magic.inputs.schemas import KuraSummary
from kura_magic.keys import cache_key
from kura_magic.run.batch_mode import poll_batches
from kura_magic.run.completion import acomplete, complete
from kura_magic.run.embeddings import Embedding, Embeddings, aembed, embed
from kura_magic.run.history import compare, load_run, runs
from kura_magic.run.pipeline import asummarise, estimate, summarise
from kura_magic.run.results import Completion, SummaryResult, SummaryRun
from kura_magic.run.session import (
    active_experiment,
    cache_info,
    clear_all_caches,
    clear_cache,
    experiment,
    export_experiment,
    import_experiment,
    prune,
    set_experiment,
)
from kura_magic.run.sweep import Sweep, sweep
from kura_magic.types import CacheInfo, RunStats
from kura_magic.views.batches import BatchTable

__version__ = "0.1.0"

# The public surface. Everything else is reachable from its wing: storage types from
# `kura_magic.storage`, every error from `kura_magic.errors`, plain data from `kura_magic.types`,
# settings from `kura_magic.config`.
__all__ = [
    # runs and calls
    "summarise", "asummarise", "estimate", "sweep", "complete", "acomplete", "embed", "aembed",
    "load_conversations", "cache_key", "configure",
    # the cache and experiments
    "cache_info", "clear_cache", "clear_all_caches", "prune", "experiment", "set_experiment",
    "active_experiment", "export_experiment", "import_experiment",
    # the run history
    "runs", "load_run", "compare", "batches",
    # what they give back
    "SummaryRun", "SummaryResult", "RunStats", "Sweep", "Completion", "Embeddings", "Embedding", "CacheInfo",
    "KuraSummary",
    # errors
    "KuraMagicError", "ConfigError", "DataError", "CacheError", "CacheWarning", "ModelError",
    "ResponseError", "BudgetError",
]


def batches(*, experiment: str | None = None, cancel: str | None = None) -> BatchTable:
    """Poll the provider batches of this cache (`summarise(..., batch=True)`), store what the
    finished ones brought back, and show each one's state, when it was submitted and its
    cost; `cancel`: a batch id to cancel first (what it finished is kept, the rest let go).

    Example:
        >>> batches()
        no provider batches in this cache
    """
    return BatchTable(poll_batches(experiment=experiment, cancel=cancel))


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext kura_magic`: register the magics (IPython is imported only now)."""
    from kura_magic.notebook.magics import register

    register(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext kura_magic`: nothing to undo beyond IPython's own bookkeeping."""
