"""MCQ prompts never run past the teacher's context: the released rule cuts each response as the release does
(prob.py `truncate_and_add_ellipsis`: 2,500 of the judge's tokens, decoded, "..." appended), a prompt still too
long is refused with one line, and `validate` says so from the configured lengths."""

from __future__ import annotations

import pytest
from conftest import make_tiny
from helpers.experiments import small_experiment

import harness.signals as signals
import harness.signals.mcq as mcq
from harness.config import parse_experiment
from harness.errors import ConfigError
from harness.methods.base import PromptGroup
from harness.models.tiny import TINY_CONTEXT
from harness.preflight import preflight

pytestmark = pytest.mark.usefixtures("one_thread")


def released_cut_by_hand(text: str, tokenizer, max_tokens: int) -> str:
    tokens = tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.decode(tokens[:max_tokens]) + "..." if len(tokens) > max_tokens else text


def test_a_response_is_cut_as_released() -> None:
    tok = make_tiny().tokenizer
    long, short = "word " * 40, "short answer"
    assert signals.released_mcq_response(long, tok, 25) == released_cut_by_hand(long, tok, 25) == long[:25] + "..."
    assert signals.released_mcq_response(short, tok, 25) == short
    assert signals.RELEASED_MCQ_RESPONSE_TOKENS == 2500


def long_groups() -> list[PromptGroup]:
    """Two responses of 1,500 byte tokens each: two of them and the question exceed the tiny context."""
    return [PromptGroup("p0", [{"role": "user", "content": "Which is better?"}], ["a" * 1500, "b" * 1500])]


def test_the_released_rule_cuts_what_would_exceed_the_context(monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = make_tiny("llama", seed=1)
    uncut = signals.mcq_prompts(teacher, long_groups()[0], "released", both_orders=False)
    assert len(uncut[0][2]) > TINY_CONTEXT
    # The release's 2,500 tokens do not fit a 2,048-token context either: a smaller cut shows the cut works.
    monkeypatch.setattr(mcq, "RELEASED_MCQ_RESPONSE_TOKENS", 600)  # where the released rule reads it
    asks = signals.mcq_prompts(teacher, long_groups()[0], "released", both_orders=False, response_tokens=600)
    assert len(asks[0][2]) <= TINY_CONTEXT
    prompt = teacher.tokenizer.decode(asks[0][2])
    assert '"""\n' + "a" * 600 + '...\n"""' in prompt and "a" * 601 not in prompt
    result = signals.mcq_preference(teacher, long_groups(), rule="released", progress=None)
    assert len(result.values) == 1 and 0 < result.values[0][0][1] < 1


def test_a_prompt_beyond_the_context_is_refused_in_one_line() -> None:
    teacher = make_tiny("llama", seed=1)
    with pytest.raises(ConfigError) as err:
        signals.mcq_preference(teacher, long_groups(), rule="debiased", progress=None)
    message = str(err.value)
    assert "\n" not in message and "'p0'" in message and f"context of {TINY_CONTEXT}" in message
    assert "sampling.max_new_tokens" in message


def _experiment(mcq: str, sample_tokens: int, methods: list | None = None):
    data = small_experiment("mcq", sample_tokens=sample_tokens, signals={"mcq": mcq},
                            methods=methods or [{"name": "pad"}], budget={"micro_batch": 1})
    return parse_experiment(data, "test")


def test_validate_catches_mcq_prompts_beyond_the_teacher_context() -> None:
    # 2 x 1,200 sampled tokens + 48 prompt tokens > 2,048: refused for a method reading the MCQ signal ...
    with pytest.raises(ConfigError) as err:
        preflight(_experiment("debiased", 1200), "exp.yaml")
    line = next(x for x in str(err.value).splitlines() if "signals.mcq" in x)
    assert "2448 tokens" in line and f"context of {TINY_CONTEXT}" in line
    # ... and nothing is said when no method reads it, or when the lengths fit.
    preflight(_experiment("debiased", 1200, [{"name": "kd"}]), "exp.yaml")
    preflight(_experiment("debiased", 600), "exp.yaml")


def test_validate_with_gemma2_lengths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gemma-2's 8,192 tokens and the paper configs' 4,096-token samples: two uncut samples and the question do
    not fit (debiased), the release's cut at 2,500 makes them fit (released)."""
    import harness.preflight

    monkeypatch.setattr(harness.preflight, "model_context_length", lambda spec: 8192)
    with pytest.raises(ConfigError, match=r"two responses of up to 4096 tokens .*8240 tokens.*context of 8192"):
        preflight(_experiment("debiased", 4096), "exp.yaml")
    preflight(_experiment("released", 4096), "exp.yaml")  # 2 x 2500 + 48 <= 8192
    monkeypatch.setattr(harness.preflight, "model_context_length", lambda spec: 4096)
    with pytest.raises(ConfigError, match="2500 tokens .cut at 2500 as released from sampling.max_new_tokens 3000"):
        preflight(_experiment("released", 3000), "exp.yaml")
