"""Chat formatting, applied the same way everywhere (sampling, scoring, training, benchmarks).

Convention used across the harness: a sequence is `prompt_ids + response_ids` where
  prompt_ids   = the tokenizer's chat template over [context..., messages...] with the generation prompt,
  response_ids = tokenizer(response, no special tokens) + [end-of-turn token], the end-of-turn token only
                 when the response FINISHED (a sample cut at max_new_tokens did not end there; teaching
                 or scoring an end after cut text would train the student to stop mid-sentence).
Tokenizing the response on its own (not re-tokenizing the joined text) makes a response's token ids
identical under every context, so teacher and student scores and top-k teacher logits line up token by
token when the two share a vocabulary.

The end-of-turn token is the one the chat template writes after an assistant turn, which is not always
the tokenizer's `eos_token`: Gemma-2-it ends a turn with `<end_of_turn>` (its eos is `<eos>`),
Llama-3.x-Instruct with `<|eot_id|>`. It is found by rendering an assistant turn through the template
(`end_of_turn_from_template`), or given in the model spec (`end_of_turn:`). Generation stops on it and on
every id of the model's `generation_config.eos_token_id` (`stop_ids`), in every backend.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from harness.errors import ModelSourceError


@dataclass(frozen=True)
class ChatFormatter:
    tokenizer: Any
    system_prompt: str | None = None
    demonstrations: tuple[tuple[str, str], ...] = ()  # (user, assistant) turns only this model sees
    end_of_turn: str | None = None  # the end-of-turn token's text, when not derived from the template
    generation_eos_ids: tuple[int, ...] = ()  # the model's generation_config.eos_token_id (stop ids too)

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

    @cached_property
    def end_of_turn_id(self) -> int:
        if self.end_of_turn is not None:
            return token_id_of(self.tokenizer, self.end_of_turn)
        derived = end_of_turn_from_template(self.tokenizer)
        if derived is not None:
            return derived
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ModelSourceError(
                "cannot tell how a response ends: the chat template writes no special token after an assistant "
                "turn and the tokenizer defines no eos token; set `end_of_turn:` in the model spec"
            )
        return int(eos)

    @cached_property
    def pad_id(self) -> int:
        """What batches are padded with: the tokenizer's pad token, else the end-of-turn token (padding is masked)."""
        pad = self.tokenizer.pad_token_id
        return self.end_of_turn_id if pad is None else int(pad)

    @cached_property
    def stop_ids(self) -> tuple[int, ...]:
        """Every id that ends a generated response: the end-of-turn token, the tokenizer's eos and the
        model's generation-config eos ids (the set both generation backends stop on)."""
        stops = {self.end_of_turn_id, *self.generation_eos_ids}
        if self.tokenizer.eos_token_id is not None:
            stops.add(int(self.tokenizer.eos_token_id))
        return tuple(sorted(stops))

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

    def response_ids(self, response: str, max_length: int | None = None, finished: bool = True) -> list[int]:
        """The response's tokens, ended with the end-of-turn token when it finished (see the module doc)."""
        ids = list(self.tokenizer(response, add_special_tokens=False)["input_ids"])
        if max_length is not None and len(ids) >= max_length:
            return ids[:max_length]  # truncated: no end-of-turn, the response did not end here
        return ids + [self.end_of_turn_id] if finished else ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    @classmethod
    def for_spec(cls, tokenizer: Any, spec: Any, generation_eos_ids: tuple[int, ...] = ()) -> ChatFormatter:
        """Build from a `ModelSpec` (its system prompt, demonstrations and end-of-turn override)."""
        demos = tuple((d.user, d.assistant) for d in getattr(spec, "demonstrations", ()))
        return cls(tokenizer, getattr(spec, "system_prompt", None), demos, getattr(spec, "end_of_turn", None),
                   generation_eos_ids)


_MARKER = "PADHARNESSENDPROBE"


def end_of_turn_from_template(tokenizer: Any) -> int | None:
    """The first special token the chat template writes after an assistant turn's text, or None.

    Renders [user, assistant] with a marker as the assistant's content and tokenizes what follows the
    marker: Gemma-2 gives `<end_of_turn>`, Llama-3.x `<|eot_id|>`, ChatML `<|im_end|>`. Only special
    (added) tokens count, so a template that ends turns with plain text (a newline) gives None.
    """
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _MARKER}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # templates may refuse a conversation shape; then the eos fallback applies
        return None
    cut = text.rfind(_MARKER)
    if cut < 0:
        return None
    suffix = text[cut + len(_MARKER):]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special |= set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    for token in tokenizer(suffix, add_special_tokens=False)["input_ids"]:
        if int(token) in special:
            return int(token)
    return None


def token_id_of(tokenizer: Any, token: str) -> int:
    """The id of one token given by its text (`end_of_turn: "<end_of_turn>"`), or one clear error."""
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ModelSourceError(
            f"end_of_turn {token!r} is not one token of this tokenizer (it encodes to {ids}); give the exact "
            f"text of the token the chat template writes after an assistant turn"
        )
    return int(ids[0])
