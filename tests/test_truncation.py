"""`budget.truncation: group_as_released`: the released PAD code's cut (TRL's DPO/SimPO trainer), retyped from
the reference and compared with the harness's on random lengths; every method and every length-cut signal
cuts a prompt's group the same way; the default rule and the keys made before the option are unchanged."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from harness.config import Budget
from harness.methods.base import PromptGroup, Signal, TrainContext
from harness.methods.common import fit_group, fit_group_as_released, fit_lengths
from harness.training.budget import truncation_counts


def released_tokenize_row_cut(prompt: list[int], responses: list[list[int]], max_length: int,
                              max_prompt_length: int, truncation_mode: str = "keep_end"):
    """Retyped from EganGu/PAD scripts/simpo_trainer.py `SimPOTrainer.tokenize_row` (itself TRL's
    DPOTrainer.tokenize_row generalised from chosen/rejected to a list of responses), after tokenization:
    `truncation_mode` is SimPOConfig's default "keep_end" (training_configs/gemma-2-2b-it-pd.yaml sets none)."""
    prompt_tokens = {"prompt_input_ids": list(prompt), "prompt_attention_mask": [1] * len(prompt)}
    responses_tokens = [{"prompt_input_ids": list(prompt), "prompt_attention_mask": [1] * len(prompt),
                         "input_ids": list(r), "attention_mask": [1] * len(r)} for r in responses]
    longer_response_length = max(len(res["input_ids"]) for res in responses_tokens)

    for answer_tokens in [*responses_tokens, prompt_tokens]:
        if len(answer_tokens["prompt_input_ids"]) + longer_response_length > max_length:
            if truncation_mode == "keep_start":
                for k in ["prompt_input_ids", "prompt_attention_mask"]:
                    answer_tokens[k] = answer_tokens[k][:max_prompt_length]
            elif truncation_mode == "keep_end":
                for k in ["prompt_input_ids", "prompt_attention_mask"]:
                    answer_tokens[k] = answer_tokens[k][-max_prompt_length:]
            else:
                raise ValueError(f"Unknown truncation mode: {truncation_mode}")

    # if that's still too long, truncate the response
    for answer_tokens in responses_tokens:
        if len(answer_tokens["prompt_input_ids"]) + longer_response_length > max_length:
            for k in ["input_ids", "attention_mask"]:
                answer_tokens[k] = answer_tokens[k][: max_length - max_prompt_length]

    prompts = {tuple(res["prompt_input_ids"]) for res in responses_tokens}
    assert prompts == {tuple(prompt_tokens["prompt_input_ids"])}  # one prompt for the whole group
    return prompt_tokens["prompt_input_ids"], [res["input_ids"] for res in responses_tokens]


def _ids(start: int, n: int) -> list[int]:
    return list(range(start, start + n))  # distinct ids: which end survives is checked, not only how many


def test_the_released_cut_equals_the_retyped_trl_cut_on_random_lengths() -> None:
    rng = random.Random(0)
    differs_from_per_response = 0
    for _ in range(3000):
        max_length = rng.choice([16, 64, 2048])
        max_prompt = rng.randrange(1, max_length)
        prompt = _ids(10**6, rng.randrange(1, 2 * max_length))
        responses = [_ids(10**7 * (j + 1), rng.randrange(0, 2 * max_length)) for j in range(rng.randrange(1, 6))]
        ours = fit_group_as_released(prompt, responses, max_length, max_prompt)
        assert ours == released_tokenize_row_cut(prompt, responses, max_length, max_prompt)
        assert len(ours[0]) + max(len(r) for r in ours[1]) <= max_length
        assert ours == fit_group(prompt, responses, max_length, max_prompt, "group_as_released")
        differs_from_per_response += ours != fit_group(prompt, responses, max_length, max_prompt)
    assert differs_from_per_response > 500  # the two rules are not the same rule (671 of 3000 here)


def test_the_paper_lengths_cut_every_response_of_a_long_group_to_248_tokens() -> None:
    prompt, long, short = _ids(0, 100), _ids(1000, 1990), _ids(5000, 40)
    cut_prompt, (a, b) = fit_group_as_released(prompt, [long, short], 2048, 1800)
    assert cut_prompt == prompt and a == long[:248] and b == short  # a short response is not cut
    per_prompt, (pa, pb) = fit_group(prompt, [long, short], 2048, 1800)
    assert len(pa) == 1948 and pb == short  # today's rule keeps 1,948 tokens of the long one
    # A prompt longer than max_prompt_length whose group fits stays whole (per response: cut to 1800).
    whole, _ = fit_group_as_released(_ids(0, 1900), [_ids(9000, 100)], 2048, 1800)
    assert len(whole) == 1900 and len(fit_group(_ids(0, 1900), [_ids(9000, 100)], 2048, 1800)[0]) == 1800
    # Too long together: the prompt keeps its END (keep_end).
    kept, (r,) = fit_group_as_released(_ids(0, 1900), [_ids(9000, 300)], 2048, 1800)
    assert kept == _ids(100, 1800) and r == _ids(9000, 248)


def test_per_response_is_the_cut_as_it_was() -> None:
    rng = random.Random(1)
    for _ in range(500):
        prompt = _ids(0, rng.randrange(1, 90))
        responses = [_ids(1000 * (j + 1), rng.randrange(0, 90)) for j in range(3)]
        cut_prompt, cut = fit_group(prompt, responses, 64, 40)
        assert [(cut_prompt, r) for r in cut] == [fit_lengths(prompt, r, 64, 40) for r in responses]


def test_truncation_counts_follow_the_rule() -> None:
    lengths = ([100, 1900, 1900], [[1990, 40], [100], [300, 10]])
    per = truncation_counts(*lengths, Budget(max_length=2048, max_prompt_length=1800))
    released = truncation_counts(*lengths, Budget(max_length=2048, max_prompt_length=1800,
                                                  truncation="group_as_released"))
    assert per == {"prompts_truncated": 2, "responses_truncated": 2}  # 1990 > 1948; 300 > 248
    assert released == {"prompts_truncated": 1, "responses_truncated": 2}  # 1990 -> 248; 300 -> 248 (not 10)


def test_the_default_keeps_the_train_keys_made_before_the_option() -> None:
    assert "truncation" not in Budget().result_inputs()
    assert Budget(truncation="group_as_released").result_inputs()["truncation"] == "group_as_released"
    with pytest.raises(ValueError, match="cannot be set per method"):
        from harness.config import MethodSpec

        MethodSpec.model_validate({"name": "sft", "optimizer": {"truncation": "per_response"}})


# ---------------------------------------------------------------- every method cuts as the group is cut


class IdsFormatter:
    """A formatter whose 'text' is already token ids (the methods then pack exactly those)."""

    pad_id = 0
    end_of_turn_id = 0

    def prompt_ids(self, messages: list[int], max_length: int | None = None) -> list[int]:
        return list(messages) if max_length is None else list(messages)[-max_length:]

    def response_ids(self, response: list[int], max_length: int | None = None, finished: bool = True) -> list[int]:
        return list(response) if max_length is None else list(response)[:max_length]


MAX_LENGTH, MAX_PROMPT = 32, 20
# Group 0: its longest response (30) does not fit beside the prompt (10): every response is cut to 12.
# Group 1: a prompt over max_prompt_length (25) whose short responses fit: nothing is cut.
PROMPTS = [_ids(100, 10), _ids(200, 25)]
RESPONSES = [[_ids(1000, 30), _ids(2000, 8), _ids(3000, 15)], [_ids(4000, 3), _ids(5000, 4), _ids(6000, 7)]]
WINS = [[0.2, 0.3, 0.9], [0.9, 0.1, 0.5]]  # teacher-best 2 / 0, worst 0 / 1


def _groups() -> list[PromptGroup]:
    groups = []
    for g, (prompt, responses) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        pref = [[0.5 if i == j else WINS[g][i] for j in range(3)] for i in range(3)]
        groups.append(PromptGroup(f"p{g}", prompt, responses, {Signal.MCQ_PREFERENCE: pref,  # type: ignore[arg-type]
                                                               Signal.REFERENCE_LOGPROB: [0.0, 0.0, 0.0]}))
    return groups


def _expected(truncation: str) -> list[tuple[list[int], list[list[int]]]]:
    if truncation == "group_as_released":
        return [released_tokenize_row_cut(p, rs, MAX_LENGTH, MAX_PROMPT) for p, rs in zip(PROMPTS, RESPONSES,
                                                                                            strict=True)]
    return [fit_group(p, rs, MAX_LENGTH, MAX_PROMPT) for p, rs in zip(PROMPTS, RESPONSES, strict=True)]


def _sequences(packed: Any) -> list[tuple[list[int], list[int]]]:
    """(prompt, response) token ids of every packed sequence, in the method's output order."""
    if hasattr(packed, "response_mask"):
        out = []
        for ids, attn, resp in zip(packed.input_ids, packed.attention_mask, packed.response_mask, strict=True):
            out.append((ids[(attn == 1) & (resp == 0)].tolist(), ids[resp == 1].tolist()))
        return out
    seqs: dict[int, tuple[list[int], list[tuple[int, int]]]] = {}
    for row, col, target, owner, slot in zip(packed.rows.tolist(), packed.cols.tolist(), packed.targets.tolist(),
                                             packed.owner.tolist(), packed.slot.tolist(), strict=True):
        shared = packed.input_ids[row][packed.segment[row] == 0].tolist()
        first = col - slot  # the segment's copy of the last prompt token
        seqs.setdefault(owner, (shared + [int(packed.input_ids[row][first])], []))[1].append((slot, target))
    return [(seqs[o][0], [t for _, t in sorted(seqs[o][1])]) for o in sorted(seqs)]


def _method_sequences(method: Any, truncation: str, share: bool) -> list[tuple[list[int], list[int]]]:
    ctx = TrainContext(formatter=IdsFormatter(), max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT,
                       truncation=truncation, share_prompts=share)
    return _sequences(method.collate(method.build_examples(_groups(), random.Random(0)), ctx)["packed"])


@pytest.mark.parametrize("truncation", ["group_as_released", "per_response"])
@pytest.mark.parametrize("share", [False, True])
def test_every_method_cuts_a_response_as_its_whole_group_is_cut(truncation: str, share: bool) -> None:
    from baselines.dpo import DPOMethod
    from baselines.sft import SFTMethod
    from baselines.simpo import SimPOMethod
    from harness.methods.pad import PADMethod

    want = _expected(truncation)
    pad = _method_sequences(PADMethod({"mcq_filter": False}), truncation, share)
    assert pad == [(p, r) for p, rs in want for r in rs]
    assert _method_sequences(SFTMethod(), truncation, share) == [(want[0][0], want[0][1][2]),
                                                                 (want[1][0], want[1][1][0])]
    for method in (DPOMethod(), SimPOMethod()):  # best-worst pairs: every chosen, then every rejected
        assert _method_sequences(method, truncation, share) == [
            (want[0][0], want[0][1][2]), (want[1][0], want[1][1][0]),
            (want[0][0], want[0][1][0]), (want[1][0], want[1][1][1])]
    if truncation == "group_as_released":  # the rule moved these, or the test would not tell the rules apart
        assert want[0][1][2] == RESPONSES[0][2][:12] and want[1][0] == PROMPTS[1]


@pytest.mark.parametrize("truncation", ["group_as_released", "per_response"])
def test_signals_score_exactly_what_training_packs(truncation: str) -> None:
    from baselines.kd import KDMethod
    from harness.signals import scoring_inputs

    model = SimpleNamespace(formatter=IdsFormatter())
    scored = scoring_inputs(model, _groups(), MAX_LENGTH, MAX_PROMPT, truncation)  # type: ignore[arg-type]
    assert [(p, rs) for p, rs in scored] == _expected(truncation)
    groups = _groups()
    for group, (_, responses) in zip(groups, scored, strict=True):  # top-k rows as the teacher scored them
        group.signals[Signal.TEACHER_TOPK] = {"ids": [torch.zeros((len(r), 2), dtype=torch.long) for r in responses],
                                              "logprobs": [torch.zeros((len(r), 2)) for r in responses]}
    for which in ("all", "first"):
        method = KDMethod({"responses": which})
        ctx = TrainContext(formatter=IdsFormatter(), max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT,
                           truncation=truncation)
        batch = method.collate(method.build_examples(groups, random.Random(0)), ctx)
        keep = slice(None) if which == "all" else slice(0, 1)
        assert _sequences(batch["packed"]) == [(p, r) for p, rs in scored for r in rs[keep]]
        # the teacher's top-k cover every trained response token, no more
        assert batch["kd_mask"].sum(-1).tolist() == [float(len(r)) for _, rs in scored for r in rs[keep]]


@pytest.mark.parametrize(("prompt", "max_new", "per_response", "released"), [
    (150.0, 4096, (150.0, 451.0), (150.0, 451.0)),  # fits: nothing cut either way
    (1700.0, 4096, (1700.0, 348.0), (1700.0, 248.0)),  # too long: every response of the group to 248
    (1900.0, 100, (1800.0, 101.0), (1900.0, 101.0)),  # a long prompt whose group fits is not cut
])
def test_the_estimate_prices_lengths_as_the_rule_cuts_them(prompt, max_new, per_response, released) -> None:
    from harness.config import Experiment
    from harness.estimate.work import Shapes

    lengths = SimpleNamespace(prompt_tokens=lambda who: prompt, student=SimpleNamespace(shared_prefix=0.0, turn_end=1),
                              teacher=SimpleNamespace(shared_prefix=0.0))
    for rule, want in (("per_response", per_response), ("group_as_released", released)):
        exp = Experiment.model_validate({
            "name": "e", "teacher": {"model": "tiny:llama"}, "student": {"model": "tiny:llama"},
            "methods": [{"name": "sft"}], "sampling": {"max_new_tokens": max_new},
            "budget": {"max_length": 2048, "max_prompt_length": 1800, "truncation": rule}})
        assert Shapes(exp, lengths, None, None).scored("student") == want  # type: ignore[arg-type]
