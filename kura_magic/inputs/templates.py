"""Prompt templates: Jinja2, seeing `conversation`, `transcript` and the user's variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import jinja2.meta

from kura_magic.errors import TemplateError
from kura_magic.types import Conversation, lone_surrogate

_ENVIRONMENT = jinja2.Environment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
)
_CONVERSATION_NAMES = {"conversation", "transcript"}


@dataclass(frozen=True)
class PromptTemplate:
    """A compiled prompt; `render(conversation)` gives the text sent to the model.

    Example:
        >>> from kura_magic.types import Message
        >>> t = PromptTemplate.compile("Summarise:\\n{{ transcript }}")
        >>> t.render(Conversation(chat_id="1", messages=[Message(role="user", content="hi")]))
        'Summarise:\\nuser: hi'
    """

    source: str
    template: jinja2.Template
    variables: Mapping[str, Any]
    # Jinja's globals and the user's variables, merged once: Jinja's own `render` merges
    # them for every conversation (from a ChainMap, slowly).
    namespace: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def compile(cls, source: str, variables: Mapping[str, Any] | None = None, *,
                uses: str = "transcript") -> PromptTemplate:
        """Parse `source`, checking that it is a string that uses the conversation somewhere
        (`uses`="output": a judge's prompt, which must use the output it judges)."""
        if not isinstance(source, str):
            raise TemplateError(
                f"the prompt is a {type(source).__name__}, not a string: write the prompt as "
                "text that uses {{ transcript }}"
            )
        if not source.strip():
            raise TemplateError("the prompt is empty: write a prompt that uses {{ transcript }}")
        try:  # as written, so a line number counts the lines the user sees
            parsed = _ENVIRONMENT.parse(source)
            template = _ENVIRONMENT.from_string(source)  # its output is stripped when rendered
        except jinja2.TemplateSyntaxError as exc:  # and TemplateAssertionError: an unknown filter
            raise TemplateError(_syntax_problem(source, exc)) from None
        used = jinja2.meta.find_undeclared_variables(parsed)
        if uses != "transcript" and uses not in used:
            raise TemplateError(f"the prompt never uses {{{{ {uses} }}}}: put {{{{ {uses} }}}} where it belongs")
        if uses == "transcript" and not used & _CONVERSATION_NAMES:
            raise TemplateError(
                "the prompt never uses {{ transcript }} or {{ conversation }}, so every "
                "conversation would get the same answer: put {{ transcript }} where the "
                "conversation belongs"
            )
        variables = dict(variables or {})
        return cls(source.strip(), template, variables, {**template.globals, **variables})

    def render(self, conversation: Conversation, **extra: Any) -> str:
        """The prompt for one conversation (and `extra` names, such as a judge's `output`); a
        failure names the conversation and the cause."""
        names = {**self.namespace, "conversation": conversation, "transcript": conversation.transcript(), **extra}
        try:
            # Jinja's `new_context` would copy the globals' names into each context, for the
            # module exports a prompt never makes; `names` holds the globals already.
            context = _ENVIRONMENT.context_class(_ENVIRONMENT, names, self.template.name, self.template.blocks)
            text = _ENVIRONMENT.concat(self.template.root_render_func(context)).strip()
        except jinja2.UndefinedError as exc:
            raise TemplateError(
                f"the prompt does not render for conversation {conversation.chat_id!r}: "
                f"{exc.message}: define it in the notebook, in a cell above this one"
            ) from None
        except Exception as exc:  # a filter or expression of the user's own raised
            raise TemplateError(
                f"the prompt does not render for conversation {conversation.chat_id!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        problem = None if text.isascii() else lone_surrogate(text)  # ASCII has no surrogates
        if problem is not None:
            raise TemplateError(
                f"the prompt for conversation {conversation.chat_id!r} {problem} (in the prompt, "
                "a variable or the conversation's metadata)"
            )
        return text


def _syntax_problem(source: str, exc: jinja2.TemplateSyntaxError) -> str:
    """What is wrong and where: the line number in `source` as written, and that line.

    Example:
        >>> try:
        ...     jinja2.Environment().parse("Summarise:\\n{{ transcript }")
        ... except jinja2.TemplateSyntaxError as exc:
        ...     print(_syntax_problem("Summarise:\\n{{ transcript }", exc))
        the prompt does not parse, line 2 ({{ transcript }): unexpected '}'
    """
    lines = source.splitlines()
    number = exc.lineno if exc.lineno <= len(lines) else len(lines)
    where = f"line {number} ({lines[number - 1].strip()[:80]})" if lines else f"line {number}"
    return f"the prompt does not parse, {where}: {exc.message}"
