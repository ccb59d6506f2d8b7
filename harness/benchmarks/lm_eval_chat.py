"""Chat turns inside lm-eval's text contexts.

lm-eval builds a task's prompt as one text context; with a chat template it hands the turns to the model's
`apply_chat_template`. Ours (`HarnessLM`, lm_eval_adapter.py) returns the turns as JSON behind a mark, so
whoever receives the context, generation (lm_eval_adapter.py) or log-likelihood scoring
(lm_eval_loglikelihood.py), can turn it back into messages and render them with the model's own chat
template. A context without the mark is plain text: one user message.
"""

from __future__ import annotations

import json

CHAT_MARK = "__harness_chat__:"  # the JSON messages of a chat context follow this mark


def messages_to_context(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """`HarnessLM.apply_chat_template`: the messages as a marked JSON context (lm-eval's signature; the
    generation prompt is added when the model's own template renders the messages)."""
    return CHAT_MARK + json.dumps(messages)


def is_chat_context(context: str) -> bool:
    return context.startswith(CHAT_MARK)


def context_to_messages(context: str) -> list[dict[str, str]]:
    """Chat messages from an lm-eval context: our JSON mark, or plain text as one user message."""
    if is_chat_context(context):
        return list(json.loads(context[len(CHAT_MARK):]))
    return [{"role": "user", "content": context}]
