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

from kura_magic.completion import acomplete, complete
from kura_magic.config import Settings, configure, settings
from kura_magic.embeddings import (
    Embedding,
    Embeddings,
    aembed,
    clear_embedding_cache,
    embed,
    embedding_cache_info,
    embedding_key,
)
from kura_magic.errors import (
    AuthenticationError,
    BudgetError,
    CacheError,
    CacheMissError,
    CacheWarning,
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
from kura_magic.history import compare, load_run, runs
from kura_magic.keys import cache_key
from kura_magic.loaders import load_conversations
from kura_magic.pipeline import asummarise, estimate, summarise
from kura_magic.results import Completion, Estimate, RunStats, SummaryResult, SummaryRun
from kura_magic.schemas import KuraSummary
from kura_magic.session import (
    active_experiment,
    cache_info,
    clear_all_caches,
    clear_cache,
    clear_model,
    experiment,
    export_experiment,
    import_experiment,
    prune,
    set_experiment,
)
from kura_magic.sweep import Sweep, asweep, sweep
from kura_magic.disk_store import DiskStore
from kura_magic.store import MemoryStore, Pruned, Store
from kura_magic.types import (
    CacheEntry,
    CacheInfo,
    CacheMode,
    ChatRequest,
    Conversation,
    ExperimentInfo,
    Message,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError", "BudgetError", "CacheEntry", "CacheError", "CacheInfo",
    "CacheMissError", "CacheMode", "CacheWarning", "ChatRequest", "Completion", "ConfigError",
    "Conversation", "DataError", "DiskStore", "Embedding", "Embeddings", "Estimate",
    "ExperimentInfo", "KuraMagicError", "KuraSummary", "LocalModelError", "MemoryStore",
    "Message", "MissingAPIKeyError", "ModelError", "Pruned", "ResponseError", "RunStats", "SchemaError",
    "Settings", "Store", "SummaryResult", "SummaryRun", "Sweep", "TemplateError", "UnknownModelError",
    "Usage", "acomplete", "active_experiment", "aembed", "asummarise", "asweep", "cache_info",
    "cache_key", "clear_all_caches", "clear_cache", "clear_embedding_cache", "clear_model", "compare", "complete",
    "configure", "embed", "embedding_cache_info", "embedding_key", "estimate", "experiment",
    "export_experiment", "import_experiment", "load_conversations", "load_run", "prune", "runs",
    "set_experiment", "settings", "summarise", "sweep",
]


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext kura_magic`: register the magics (IPython is imported only now)."""
    from kura_magic.notebook.magics import register

    register(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext kura_magic`: nothing to undo beyond IPython's own bookkeeping."""
