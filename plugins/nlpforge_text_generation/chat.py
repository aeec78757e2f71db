"""Chat rows rendered with the tokenizer's chat template (jinja2, no transformers).

Which characters are the assistant's is found by rendering the conversation turn by turn:
the text an assistant turn adds after the prompt for it (``add_generation_prompt``) is what
the model learns to write, its end-of-turn token included. That works for any template that
renders a conversation as the concatenation of its turns, without the ``{% generation %}``
markers few templates have.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

from nlpforge import DataError

ROLES = ("system", "user", "assistant", "tool")


@functools.lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def check_messages(messages: Any, path: str | None, line: int | None,
                   need_assistant: bool) -> None:
    """DataError naming the message and field that is wrong."""
    if not isinstance(messages, list) or not messages:
        raise DataError("expected a non-empty list of messages", path, line, "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DataError(f"messages[{i}]: expected an object with 'role' and 'content'",
                            path, line, "messages")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise DataError(f"messages[{i}].{key}: expected a string", path, line,
                                "messages")
        if message["role"] not in ROLES:
            raise DataError(f"messages[{i}].role: {message['role']!r} is not one of "
                            f"{', '.join(ROLES)}", path, line, "messages")
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        raise DataError("a training conversation needs at least one assistant message (the "
                        "loss is on the assistant turns)", path, line, "messages")


def render(template: str, messages: Sequence[dict], special: dict[str, str],
           add_generation_prompt: bool = False) -> str:
    from jinja2.exceptions import TemplateError

    try:
        return _compile(template).render(messages=list(messages),
                                         add_generation_prompt=add_generation_prompt,
                                         **special)
    except TemplateError as exc:
        raise DataError(f"the chat template cannot render this conversation: {exc}")


def assistant_spans(template: str, messages: Sequence[dict],
                    special: dict[str, str]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns."""
    text = render(template, messages, special)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(template, messages[:i], special, add_generation_prompt=True)
        after = render(template, messages[:i + 1], special)
        if text.startswith(after) and after.startswith(before):
            spans.append((len(before), len(after)))
            continue
        # A template that rewrites earlier turns: fall back to finding the content itself.
        start = text.find(message["content"], spans[-1][1] if spans else 0)
        if start < 0:
            raise DataError(f"messages[{i}]: cannot locate the assistant turn in the rendered "
                            f"conversation")
        spans.append((start, start + len(message["content"])))
    return text, spans
