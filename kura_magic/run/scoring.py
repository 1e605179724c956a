"""Scores for a sweep's outputs: a Python function of (conversation, output), or a judge
prompt sent through the same cache as any call, its reply read as a number."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kura_magic.errors import ConfigError, ResponseError
from kura_magic.inputs.templates import PromptTemplate
from kura_magic.run.completion import acomplete
from kura_magic.run.results import SummaryResult
from kura_magic.types import Conversation

ScoreFunction = Callable[[Conversation, Any], "float | bool | None"]
_SCORE_LINE = re.compile(r"\bscore\s*[:=]\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_FIRST_WORD = re.compile(r"\s*(-?\d+(?:\.\d+)?|[a-z]+)")
_VERDICTS = {"yes": 1.0, "true": 1.0, "pass": 1.0, "no": 0.0, "false": 0.0, "fail": 0.0}


@dataclass(frozen=True)
class Scored:
    """One row's score (None: no score, e.g. the row has no answer) and its judge call's money."""

    score: float | None = None
    cost: float = 0.0  # what the judge's call cost now
    saved: float = 0.0  # what a cached judge call cost when it was made


@dataclass(frozen=True)
class Scorer:
    """How rows are scored: a Python function of (conversation, output), or a judge prompt (a
    Jinja template that sees `conversation`, `transcript` and `output`) sent through the cache.

    Example:
        >>> Scorer.create(lambda conversation, output: len(output) < 80).kind
        'function'
    """

    function: ScoreFunction | None = None
    judge: PromptTemplate | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the judge's CallOptions

    @property
    def kind(self) -> str:
        return "function" if self.function is not None else "judge"

    @classmethod
    def create(cls, scorer: ScoreFunction | str, variables: Mapping[str, Any] | None = None,
               options: Mapping[str, Any] | None = None) -> Scorer:
        """A scorer from a function or a judge prompt; `options` are the judge's call options."""
        if isinstance(scorer, str):
            return cls(judge=PromptTemplate.compile(scorer, variables, uses="output"), options=dict(options or {}))
        if not callable(scorer):
            raise ConfigError(f"scorer must be a function (conversation, output) -> number or a judge "
                              f"prompt (a template using {{{{ output }}}}), got {type(scorer).__name__}")
        return cls(function=scorer)

    async def score(self, conversation: Conversation, result: SummaryResult) -> Scored:
        """The score of one row; a row without an answer has none."""
        if result.status != "ok":
            return Scored()
        if self.function is not None:
            return Scored(_as_score(self.function(conversation, result.summary), conversation.chat_id))
        assert self.judge is not None  # one of the two, by construction
        prompt = self.judge.render(conversation, output=result.summary_text())
        try:
            reply = await acomplete(prompt, **self.options)
        except ResponseError:  # the judge could not answer this one: no score, the rest go on
            return Scored()
        return Scored(judge_score(reply.text), reply.cost or 0.0, reply.saved_cost or 0.0)


def _as_score(value: Any, chat_id: str) -> float | None:
    if value is None or isinstance(value, (bool, int, float)):
        return None if value is None else float(value)
    raise ConfigError(f"the scorer gave {value!r} for conversation {chat_id!r}: return a number or a bool")


def judge_score(reply: str) -> float | None:
    """A judge's reply read as a score: its last 'Score: N', else its first word as a number or
    a verdict (yes/no, true/false, pass/fail as 1/0), else no score. Ask the judge for one.

    Example:
        >>> judge_score("Clear and short. Score: 4/5"), judge_score("3"), judge_score("Yes."), judge_score("Unsure, 5")
        (4.0, 3.0, 1.0, None)
    """
    scores = _SCORE_LINE.findall(reply)
    if scores:
        return float(scores[-1])
    first = _FIRST_WORD.match(reply.lower())
    word = first.group(1) if first else ""
    return _VERDICTS.get(word, float(word) if word[-1:].isdigit() else None)
