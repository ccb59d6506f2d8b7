"""Chat formatting, applied the same way everywhere (sampling, scoring, training, benchmarks).

Convention used across the harness: a sequence is `prompt_ids + response_ids` where
  prompt_ids   = the tokenizer's chat template over [context..., messages...] with the generation prompt,
  response_ids = tokenizer(response, no special tokens) + [end-of-turn token].
Tokenizing the response on its own (not re-tokenizing the joined text) makes a response's token ids
identical under every context, so teacher and student scores and top-k teacher logits line up token by
token when the two share a vocabulary.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from harness.errors import ModelSourceError


@dataclass(frozen=True)
class ChatFormatter:
    tokenizer: Any
    system_prompt: str | None = None
    demonstrations: tuple[tuple[str, str], ...] = ()  # (user, assistant) turns only this model sees

    def __post_init__(self) -> None:
        if not getattr(self.tokenizer, "chat_template", None):
            name = getattr(self.tokenizer, "name_or_path", "this tokenizer")
            raise ModelSourceError(
                f"{name} has no chat template; use an instruction-tuned model's tokenizer, or set "
                f"`tokenizer:` in the experiment file to one that has a chat template"
            )

    @property
    def template_hash(self) -> str:
        return hashlib.sha256(str(self.tokenizer.chat_template).encode()).hexdigest()[:12]

    @property
    def end_of_turn_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ModelSourceError("the tokenizer defines no eos token; cannot mark the end of a response")
        return int(eos)

    def context_messages(self) -> list[dict[str, str]]:
        msgs: list[dict[str, str]] = []
        if self.system_prompt:
            msgs.append({"role": "system", "content": self.system_prompt})
        for user, assistant in self.demonstrations:
            msgs.append({"role": "user", "content": user})
            msgs.append({"role": "assistant", "content": assistant})
        return msgs

    def full_messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        if self.system_prompt and messages and messages[0]["role"] == "system":
            # The model's own system prompt wins; the conversation's is folded into the first turn.
            rest = list(messages[1:])
            if rest:
                rest[0] = {**rest[0], "content": messages[0]["content"] + "\n\n" + rest[0]["content"]}
            messages = rest
        return self.context_messages() + list(messages)

    def prompt_text(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(
            self.full_messages(messages), tokenize=False, add_generation_prompt=True
        )

    def prompt_ids(self, messages: list[dict[str, str]], max_length: int | None = None) -> list[int]:
        """Token ids of the prompt; when too long, the LEFT is cut so the question itself survives."""
        ids = self.tokenizer(self.prompt_text(messages), add_special_tokens=False)["input_ids"]
        if max_length is not None and len(ids) > max_length:
            ids = ids[-max_length:]
        return list(ids)

    def response_ids(self, response: str, max_length: int | None = None) -> list[int]:
        ids = list(self.tokenizer(response, add_special_tokens=False)["input_ids"])
        if max_length is not None and len(ids) >= max_length:
            return ids[:max_length]  # truncated: no end-of-turn, the response did not end here
        return ids + [self.end_of_turn_id]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    @classmethod
    def for_spec(cls, tokenizer: Any, spec: Any) -> ChatFormatter:
        """Build from a `ModelSpec` (its system prompt and demonstrations)."""
        demos = tuple((d.user, d.assistant) for d in getattr(spec, "demonstrations", ()))
        return cls(tokenizer, getattr(spec, "system_prompt", None), demos)
