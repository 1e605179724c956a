"""Cost estimates (for `estimate`) and the `max_cost` budget that stops starting fresh calls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kura_magic import formatting
from kura_magic.calls import gateway
from kura_magic.errors import BudgetError
from kura_magic.types import ChatRequest


def estimate_total(requests: Sequence[ChatRequest]) -> float | None:
    """The summed estimate of `requests`, or None if any one has no known price."""
    total = 0.0
    for request in requests:
        estimate = gateway.estimate_cost(request)
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
    spent: float = 0.0
    reserved: float = 0.0
    replies: int = 0
    reply_tokens: int = 0
    refused: int = 0  # calls not started because they would have passed the budget
    refused_cost: float = 0.0  # their summed estimates

    @classmethod
    def create(cls, max_cost: float | None, model: str) -> Budget:
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
        return cls(max_cost)

    @property
    def limit_text(self) -> str:
        return f"budget of {formatting.money(self.max_cost)} reached"

    def reserve(self, request: ChatRequest | None) -> float | None:
        """Reserve the request's estimate, or return None if it would pass the budget."""
        if self.max_cost is None or request is None:
            return 0.0
        average = self.reply_tokens / self.replies if self.replies else None
        estimate = gateway.estimate_cost(request, reply_tokens=average) or 0.0
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

    def record(self, cost: float | None, reply_tokens: int) -> None:
        """Count a finished call; its reply length sharpens the next estimates."""
        self.spent += cost or 0.0
        self.replies += 1
        self.reply_tokens += reply_tokens
