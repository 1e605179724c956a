"""Cost estimates (for `estimate`) and the `max_cost` budget that stops starting fresh calls.

A reply's length is what an estimate mostly guesses at: it is `max_tokens` where the call
sets it, else the mean of the replies already cached for the model, else a stated guess.
Once a run has made calls, the budget counts on what they cost."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from kura_magic import formatting
from kura_magic.calls import gateway
from kura_magic.errors import BudgetError
from kura_magic.storage.responses import ResponseStore
from kura_magic.types import CacheEntry, ChatRequest

# Cached replies read to learn a model's typical reply length: enough for a steady mean.
REPLY_SAMPLE = 200


@dataclass(frozen=True)
class ReplyLength:
    """The reply length estimates assume, and where that number comes from.

    Example:
        >>> ReplyLength.of(max_tokens=300, store=None, experiment="e", model="m").basis
        'replies at max_tokens=300'
    """

    tokens: float
    basis: str

    @classmethod
    def of(cls, *, max_tokens: int | None, store: ResponseStore | None, experiment: str, model: str) -> ReplyLength:
        """`max_tokens` if set, else the mean cached reply of `model` in `experiment`, else a guess."""
        if max_tokens:
            return cls(max_tokens, f"replies at max_tokens={max_tokens}")
        lengths = cached_reply_lengths(store, experiment=experiment, model=model) if store else []
        if lengths:
            mean = sum(lengths) / len(lengths)
            return cls(mean, f"replies at the {mean:.0f}-token mean of {len(lengths)} cached replies")
        guess = gateway.DEFAULT_COMPLETION_TOKENS
        return cls(guess, f"replies guessed at {guess} tokens: nothing cached for {model} yet")


def cached_reply_lengths(store: ResponseStore, *, experiment: str, model: str) -> list[int]:
    """Reply lengths (tokens) of up to `REPLY_SAMPLE` answered entries of `model`.

    Example:
        >>> from kura_magic.storage.base import MemoryStore
        >>> from kura_magic.types import Usage
        >>> store = ResponseStore(MemoryStore())
        >>> store.set("k", CacheEntry(model="m", usage=Usage(completion_tokens=40)), experiment="e")
        True
        >>> cached_reply_lengths(store, experiment="e", model="m")
        [40]
    """
    entries = (CacheEntry.model_validate_json(data) for _, data in store.entries(experiment))
    answered = (e.usage.completion_tokens for e in entries
                if e.model == model and e.error is None and e.usage.completion_tokens > 0)
    return list(itertools.islice(answered, REPLY_SAMPLE))


def estimate_total(requests: Sequence[ChatRequest], reply: ReplyLength) -> float | None:
    """The summed estimate of `requests` with replies of `reply` length, or None if any one
    has no known price."""
    total = 0.0
    for request in requests:
        estimate = gateway.estimate_cost(request, reply_tokens=reply.tokens)
        if estimate is None:
            return None
        total += estimate
    return total


@dataclass
class Budget:
    """Spent and reserved money against `max_cost` (None: no budget).

    Example:
        >>> Budget(max_cost=None).reserve(None)
        0.0
    """

    max_cost: float | None
    reply: ReplyLength | None = None  # what estimates assume before this run's own replies
    spent: float = 0.0
    reserved: float = 0.0
    replies: int = 0
    refused: int = 0  # calls not started because they would have passed the budget
    refused_cost: float = 0.0  # their summed estimates

    @classmethod
    def create(cls, max_cost: float | None, model: str, reply: ReplyLength | None = None) -> Budget:
        """A budget for a run of `model`; refuses a budget it could not enforce."""
        if max_cost is None:
            return cls(None)
        if max_cost <= 0:
            raise BudgetError(f"max_cost must be a positive number of dollars, got {max_cost}")
        probe = ChatRequest(model, ({"role": "user", "content": "x"},))
        if gateway.estimate_cost(probe) is None:
            raise BudgetError(
                f"max_cost cannot be enforced: litellm knows no price for {model!r}. "
                "Run without --max-cost, or with a model litellm can price"
            )
        return cls(max_cost, reply)

    @property
    def limit_text(self) -> str:
        return f"budget of {formatting.money(self.max_cost)} reached"

    def reserve(self, request: ChatRequest | None) -> float | None:
        """Reserve the request's estimate, or return None if it would pass the budget: the
        mean cost of this run's finished calls once there are some, else the price of the
        request with a reply of the expected length."""
        if self.max_cost is None or request is None:
            return 0.0
        if self.replies:
            estimate = self.spent / self.replies
        else:
            tokens = self.reply.tokens if self.reply else None
            estimate = gateway.estimate_cost(request, reply_tokens=tokens) or 0.0
        if self.spent + self.reserved + estimate > self.max_cost:
            self.refused += 1
            self.refused_cost += estimate
            return None
        self.reserved += estimate
        return estimate

    @property
    def refused_each(self) -> float | None:
        """What one refused call was estimated to cost, on average (None: none refused).

        Example:
            >>> Budget(max_cost=0.01, refused=2, refused_cost=0.003).refused_each
            0.0015
        """
        return self.refused_cost / self.refused if self.refused else None

    def release(self, estimate: float) -> None:
        self.reserved -= estimate

    def record(self, cost: float | None) -> None:
        """Count a finished call; its cost sharpens the next estimates."""
        self.spent += cost or 0.0
        self.replies += 1
