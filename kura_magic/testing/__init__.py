"""A loopback OpenAI-compatible LLM server for tests and offline notebooks.

Standard library only: no IPython, ipywidgets or litellm. Answers are
deterministic (equal prompts, equal answers), JSON mode answers validate under
the requested JSON schema, and faults (429/5xx, hangs, refusals, too-long
prompts) can be injected while it runs. ``python -m kura_magic.testing`` serves
one from the command line.

It also speaks Anthropic's Messages API (``/v1/messages``), and answers refusals and
too-long prompts exactly as OpenAI, Azure OpenAI and Anthropic send them (markers in
the text; see ``provider_shapes``).

Modules: ``server`` (``LoopbackLLM`` and the HTTP plumbing), ``replies`` (what
it answers), ``provider_shapes`` (each provider's refusal and error bodies),
``batches`` (OpenAI's Files and Batch APIs: uploads, batches that complete after a
delay, output and error files, cancel, expiry), ``fake_json`` (values valid under a JSON
schema), ``cli`` (``--fail-rate``,
``--fail-first`` and ``--retry-after`` inject faults from the command line).

Example::

    with LoopbackLLM() as server:
        litellm.completion(model="openai/gpt-4o-mini", api_base=server.url,
                           api_key="sk-test", messages=[{"role": "user", "content": "hi"}])
        assert server.request_count == 1
"""

from kura_magic.testing.cli import main
from kura_magic.testing.redis import RedisServer
from kura_magic.testing.replies import embedding_for, reply_for
from kura_magic.testing.server import LoopbackLLM, RecordedRequest

__all__ = ["LoopbackLLM", "RecordedRequest", "RedisServer", "embedding_for", "main", "reply_for"]
