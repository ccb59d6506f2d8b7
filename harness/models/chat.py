"""Chat formatting, applied the same way everywhere (sampling, scoring, training, benchmarks).

Convention used across the harness: a sequence is `prompt_ids + response_ids` where
  prompt_ids   = the tokenizer's chat template over [context..., messages...] with the generation prompt,
  response_ids = tokenizer(response, no special tokens) + the template's turn suffix (see below), the suffix
                 only when the response FINISHED (a sample cut at max_new_tokens did not end there; teaching
                 or scoring an end after cut text would train the student to stop mid-sentence).
Tokenizing the response on its own (not re-tokenizing the joined text) makes a response's token ids
identical under every context, so teacher and student scores and top-k teacher logits line up token by
token when the two share a vocabulary.

The end-of-turn token is the one the chat template writes after an assistant turn, which is not always
the tokenizer's `eos_token`: Gemma-2-it ends a turn with `<end_of_turn>` (its eos is `<eos>`),
Llama-3.x-Instruct with `<|eot_id|>`. It is found by rendering an assistant turn through the template
(`end_of_turn_from_template`), or given in the model spec (`end_of_turn:`). Generation stops on it and on
every id of the model's `generation_config.eos_token_id` (`stop_ids`), in every backend.

A finished response is trained and scored with the template's WHOLE turn suffix (`turn_suffix_ids`): what
the template renders after an assistant message's content up to the next turn (Gemma-2 `<end_of_turn>\\n`,
Llama-3.x `<|eot_id|>`, ChatML `<|im_end|>\\n`), as the released PAD code does (it trains on the rendered
conversation minus the rendered prompt). Generation still stops at the end-of-turn token, so a generated
answer's text is unchanged.

Every render passes `date_string` (default the Llama-3.x templates' own default, "26 Jul 2024"): the
Llama-3.2 template otherwise writes today's date (`strftime_now`) into every prompt, so the same run would
tokenize differently from one day to the next. The date is part of the model identity (cache keys).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from harness.errors import ModelSourceError

# What Llama-3.x templates write as "Today Date:" when no `date_string` is given (3.1 always; 3.2 when the
# renderer has no `strftime_now`). Passed to every template render, so prompts never depend on the day.
DEFAULT_DATE_STRING = "26 Jul 2024"
# Enters every model identity (cache keys): bump when the tokens a formatter produces for the same
# template and texts change. 2: finished responses end with the template's whole turn suffix
# (`turn_suffix_ids`, was the end-of-turn token alone); templates rendered with a fixed `date_string`.
CHAT_FORMAT_VERSION = 2


@dataclass(frozen=True)
class ChatFormatter:
    tokenizer: Any
    system_prompt: str | None = None
    demonstrations: tuple[tuple[str, str], ...] = ()  # (user, assistant) turns only this model sees
    end_of_turn: str | None = None  # the end-of-turn token's text, when not derived from the template
    generation_eos_ids: tuple[int, ...] = ()  # the model's generation_config.eos_token_id (stop ids too)
    date_string: str = DEFAULT_DATE_STRING  # the template's `date_string` (Llama-3.x "Today Date:")

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

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        """The chat template over `messages` as text, with the fixed `date_string` (every render goes here)."""
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, date_string=self.date_string,
                                                      add_generation_prompt=add_generation_prompt))

    @cached_property
    def end_of_turn_id(self) -> int:
        if self.end_of_turn is not None:
            return token_id_of(self.tokenizer, self.end_of_turn)
        derived = end_of_turn_from_template(self.tokenizer, self.date_string)
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
    def turn_suffix_ids(self) -> tuple[int, ...]:
        """What ends a finished response in training and scoring: the tokens the template renders after an
        assistant message's content, up to the next turn, when they contain the end-of-turn token (Gemma-2
        `<end_of_turn>` `\\n`); else the end-of-turn token alone (a template that ends turns with plain
        text, or an `end_of_turn:` override the template does not write)."""
        suffix = turn_suffix_from_template(self.tokenizer, self.date_string)
        return suffix if suffix and self.end_of_turn_id in suffix else (self.end_of_turn_id,)

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
        return self.render(self.full_messages(messages), add_generation_prompt=True)

    def prompt_ids(self, messages: list[dict[str, str]], max_length: int | None = None) -> list[int]:
        """Token ids of the prompt; when too long, the LEFT is cut so the question itself survives."""
        ids = self.tokenizer(self.prompt_text(messages), add_special_tokens=False)["input_ids"]
        if max_length is not None and len(ids) > max_length:
            ids = ids[-max_length:]
        return list(ids)

    def response_ids(self, response: str, max_length: int | None = None, finished: bool = True) -> list[int]:
        """The response's tokens, ended with the template's turn suffix when it finished (see the module doc).
        Cut at `max_length`: text that fills it gets no end (it did not end there); a suffix that does not fit
        whole is cut after its end-of-turn token's part that fits."""
        ids = list(self.tokenizer(response, add_special_tokens=False)["input_ids"])
        if max_length is not None and len(ids) >= max_length:
            return ids[:max_length]  # truncated: no end-of-turn, the response did not end here
        if finished:
            ids += self.turn_suffix_ids
        return ids if max_length is None else ids[:max_length]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    @classmethod
    def for_spec(cls, tokenizer: Any, spec: Any, generation_eos_ids: tuple[int, ...] = ()) -> ChatFormatter:
        """Build from a `ModelSpec` (its system prompt, demonstrations and end-of-turn override)."""
        demos = tuple((d.user, d.assistant) for d in getattr(spec, "demonstrations", ()))
        return cls(tokenizer, getattr(spec, "system_prompt", None), demos, getattr(spec, "end_of_turn", None),
                   generation_eos_ids, getattr(spec, "date_string", None) or DEFAULT_DATE_STRING)


_MARKER = "PADHARNESSENDPROBE"
_NEXT = "PADHARNESSNEXTPROBE"


def _after_marker(tokenizer: Any, messages: list[dict[str, str]], date_string: str) -> str | None:
    """What the template renders after the probe marker (the assistant's content), or None."""
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, date_string=date_string)
    except Exception:  # templates may refuse a conversation shape
        return None
    cut = text.rfind(_MARKER)
    return None if cut < 0 else text[cut + len(_MARKER):]


def turn_suffix_from_template(tokenizer: Any, date_string: str = DEFAULT_DATE_STRING) -> tuple[int, ...] | None:
    """The tokens the chat template writes after an assistant message's content, up to the next turn.

    Renders [user, assistant=marker] and [user, assistant=marker, user] and tokenizes what follows the
    marker in each; the suffix is their common prefix in tokens, so what a template writes only at the very
    end of a conversation (an eos) or at the start of the next turn is not part of it: Gemma-2 gives
    `<end_of_turn>` `\\n`, Llama-3.x `<|eot_id|>`, ChatML `<|im_end|>` `\\n`.
    """
    turn = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _MARKER}]
    alone = _after_marker(tokenizer, turn, date_string)
    if alone is None:
        return None
    ids = list(tokenizer(alone, add_special_tokens=False)["input_ids"])
    followed = _after_marker(tokenizer, [*turn, {"role": "user", "content": _NEXT}], date_string)
    if followed is not None:
        nxt = list(tokenizer(followed, add_special_tokens=False)["input_ids"])
        common = 0
        while common < min(len(ids), len(nxt)) and ids[common] == nxt[common]:
            common += 1
        ids = ids[:common]
    return tuple(int(t) for t in ids)


def end_of_turn_from_template(tokenizer: Any, date_string: str = DEFAULT_DATE_STRING) -> int | None:
    """The first special token the chat template writes after an assistant turn's text, or None.

    Renders [user, assistant] with a marker as the assistant's content and tokenizes what follows the
    marker: Gemma-2 gives `<end_of_turn>`, Llama-3.x `<|eot_id|>`, ChatML `<|im_end|>`. Only special
    (added) tokens count, so a template that ends turns with plain text (a newline) gives None.
    """
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _MARKER}]
    suffix = _after_marker(tokenizer, messages, date_string)  # None: the eos fallback applies
    if suffix is None:
        return None
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
