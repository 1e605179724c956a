"""Cost estimates (for dry runs) and the `max_cost` budget that stops starting fresh calls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kura_magic import formatting, gateway
from kura_magic.errors import BudgetError

# A guess at the reply length when the call sets no max_tokens.
DEFAULT_COMPLETION_TOKENS = 200


def estimate_call(call: gateway.ChatCall, *, reply_tokens: float | None = None) -> float | None:
    """litellm's price for the call's prompt and an expected reply; None if no price is known.

    The reply is `max_tokens` long if the call sets it, else `reply_tokens`, else a guess.
    """
    lib = gateway.litellm()
    prompt_tokens = lib.token_counter(model=call.model, messages=list(call.messages))
    completion_tokens = call.params.get("max_tokens") or reply_tokens or DEFAULT_COMPLETION_TOKENS
    try:
        prompt_cost, completion_cost = lib.cost_per_token(
            model=call.model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    except Exception:  # litellm raises a bare Exception for unmapped models
        return None
    return float(prompt_cost + completion_cost)


def estimate_total(calls: Sequence[gateway.ChatCall]) -> float | None:
    """The summed estimate of `calls`, or None if any one has no known price."""
    total = 0.0
    for call in calls:
        estimate = estimate_call(call)
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

    @classmethod
    def create(cls, max_cost: float | None, model: str) -> Budget:
        """A budget for a run of `model`; refuses a budget it could not enforce."""
        if max_cost is None:
            return cls(None)
        if max_cost <= 0:
            raise BudgetError(f"max_cost must be a positive number of dollars, got {max_cost}")
        probe = gateway.ChatCall(model, ({"role": "user", "content": "x"},))
        if estimate_call(probe) is None:
            raise BudgetError(
                f"max_cost cannot be enforced: litellm knows no price for {model!r}. "
                "Run without --max-cost, or with a model litellm can price"
            )
        return cls(max_cost)

    @property
    def limit_text(self) -> str:
        return f"budget of {formatting.money(self.max_cost)} reached"

    def reserve(self, call: gateway.ChatCall | None) -> float | None:
        """Reserve the call's estimate, or return None if it would pass the budget."""
        if self.max_cost is None or call is None:
            return 0.0
        average = self.reply_tokens / self.replies if self.replies else None
        estimate = estimate_call(call, reply_tokens=average) or 0.0
        if self.spent + self.reserved + estimate > self.max_cost:
            return None
        self.reserved += estimate
        return estimate

    def release(self, estimate: float) -> None:
        self.reserved -= estimate

    def record(self, cost: float | None, reply_tokens: int) -> None:
        """Count a finished call; its reply length sharpens the next estimates."""
        self.spent += cost or 0.0
        self.replies += 1
        self.reply_tokens += reply_tokens
