"""lm-eval tasks: GSM8K's strict/flexible extraction as lm-eval defines it, GSM8K end to end, and our `LM`."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from harness.benchmarks.base import Answer, AnswerModel, BenchmarkData
from harness.benchmarks.lm_eval_tasks import GSM8K, HarnessLM, LMEvalTask, task_config
from harness.errors import DataSourceError

TRAIN = [{"question": f"Train q{i}: what is {i}+{i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}"} for i in range(8)]
TEST = [{"question": f"Test q{i}: what is {i}*3?", "answer": f"{i}*3=<<{i}*3={3 * i}>>{3 * i}\n#### {3 * i}"}
        for i in range(3)]

OUTPUTS = [
    "3*0 is 0.\n#### 0",  # strict and flexible right
    "Three times one is 3.",  # no "####": strict [invalid]; flexible takes the last number, "3." -> right
    "Two threes make 6, but I say\n#### 1,007\n\nQuestion: more",  # wrong under both; cut at "Question:"
]


@pytest.fixture
def gsm8k_files(tmp_path: Path) -> tuple[Path, Path]:
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in TRAIN))
    test.write_text("\n".join(json.dumps(r) for r in TEST))
    return train, test


class KnownAnswers(AnswerModel):
    """Answers test question i with OUTPUTS[i] and records the conversations it was given."""

    def __init__(self) -> None:
        self.conversations: list[list[dict[str, str]]] = []

    def answer(self, conversations: list[list[dict[str, str]]], max_new_tokens: int,
               progress: str | None = None, temperature: float = 0.0) -> list[Answer]:
        self.conversations += conversations
        return [Answer(OUTPUTS[int(c[-1]["content"].split(" q")[1].split(":")[0])], True) for c in conversations]

    @property
    def name(self) -> str:
        return "known-answers"


def test_filters_are_lm_evals_gsm8k_definitions() -> None:
    filters = {f["name"]: f["filter"] for f in task_config("gsm8k")["filter_list"]}
    assert filters["strict-match"][0]["regex_pattern"] == r"#### (\-?[0-9\.\,]+)"
    assert filters["flexible-extract"][0]["regex_pattern"] == r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
    assert filters["flexible-extract"][0]["group_select"] == -1
    assert [f["function"] for f in filters["strict-match"]] == ["regex", "take_first"]


HAND_MADE = [
    ("The total is 12 apples.\n#### 1,234", "1,234", "1,234"),
    ("I have 3 apples and 12 pears", "[invalid]", "12"),
    ("It costs $5.50.", "[invalid]", "$5.50."),
    ("#### -7\nsome words", "-7", "-7"),
    ("no numbers at all", "[invalid]", "[invalid]"),
    ("first 4 then #### 9 then 10", "9", "10"),
]


@pytest.mark.parametrize(("text", "strict", "flexible"), HAND_MADE)
def test_extraction_matches_lm_evals_own_filter_code(text: str, strict: str, flexible: str) -> None:
    from lm_eval.filters.extraction import RegexFilter
    from lm_eval.filters.selection import TakeFirstFilter

    def lm_eval_extract(pattern: str, group_select: int) -> str:
        regexed = RegexFilter(regex_pattern=pattern, group_select=group_select).apply([[text]], [{}])
        return list(TakeFirstFilter().apply(regexed, [{}]))[0]

    data = BenchmarkData(items=[{"id": "x", "doc": {}, "target": "#### 0", "messages": []}], source="test")
    [record] = GSM8K().judge(None, data, [{"id": "x", "output": text}])
    assert record["strict_match_extracted"] == lm_eval_extract(r"#### (\-?[0-9\.\,]+)", 0) == strict
    assert record["flexible_extract_extracted"] == lm_eval_extract(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", -1) == flexible


def test_exact_match_uses_the_tasks_normalisation() -> None:
    data = BenchmarkData(items=[{"id": "x", "doc": {}, "target": "so 1234.\n#### 1234", "messages": []}],
                         source="test")
    [record] = GSM8K().judge(None, data, [{"id": "x", "output": "#### 1,234\nDone, $1234."}])
    assert record["strict_match"] == 1.0  # "," removed on both sides, "(?s).*#### " strips the target's steps
    assert record["flexible_extract"] == 1.0  # "$1234." -> "1234"


def test_gsm8k_end_to_end_on_known_answers(gsm8k_files: tuple[Path, Path]) -> None:
    train, test = gsm8k_files
    bench = GSM8K(params={"data_path": str(test), "fewshot_path": str(train), "num_fewshot": 2}, max_new_tokens=32)
    data = bench.load()
    assert data.source == f"local files test={test}, train={train}" and data.version
    model = KnownAnswers()
    answers = bench.generate(model, data)
    result = bench.score(bench.judge(None, data, answers))

    # few-shot as lm-eval draws it: one Random(1234) shared across the docs, in order, 2 train docs each
    rng = random.Random(1234)
    for conversation, doc in zip(model.conversations, TEST, strict=True):
        shots = rng.sample(TRAIN, 2)
        expected = []
        for shot in shots:
            expected += [{"role": "user", "content": f"Question: {shot['question']}\nAnswer:"},
                         {"role": "assistant", "content": shot["answer"]}]
        expected.append({"role": "user", "content": f"Question: {doc['question']}\nAnswer:"})
        assert conversation == expected
    assert answers[2]["output"] == "Two threes make 6, but I say\n#### 1,007\n\n"
    assert answers[0]["decoding"]["until"] == ["Question:", "</s>", "<|im_end|>"]
    assert result.metrics["n_total"] == 3
    assert result.metrics["exact_match_strict"] == pytest.approx(100 / 3)
    assert result.metrics["exact_match_flexible"] == pytest.approx(200 / 3)
    # sample std of [1, 1, 0] is sqrt(1/3); / sqrt(3) -> 1/3 (lm-eval's mean_stderr gives 0.333 here too)
    assert result.metrics["exact_match_flexible_stderr"] == pytest.approx(100 / 3)
    assert [p["score"] for p in result.per_item] == [1.0, 1.0, 0.0]  # headline: flexible-extract


def test_lm_eval_simple_evaluate_with_our_lm_agrees(gsm8k_files: tuple[Path, Path]) -> None:
    train, test = gsm8k_files
    files = {"test": str(test), "train": str(train)}
    bench = LMEvalTask(params={"task": "gsm8k", "num_fewshot": 2, "data_files": files})
    data = bench.load()
    result = bench.score(bench.judge(None, data, bench.generate(KnownAnswers(), data)))
    assert result.metrics["exact_match,strict-match"] == pytest.approx(1 / 3)
    assert result.metrics["exact_match,flexible-extract"] == pytest.approx(2 / 3)
    assert any("lm-eval's own aggregate" in n and "0.666" in n for n in result.notes)
    assert any('"exact_match_stderr,flexible-extract": 0.333' in n for n in result.notes)


def test_harness_lm_generate_until_and_loglikelihood() -> None:
    from lm_eval.api.instance import Instance

    def request(kind: str, args: tuple[Any, ...]) -> Instance:
        return Instance(request_type=kind, doc={}, arguments=args, idx=0)

    lm = HarnessLM(KnownAnswers(), max_new_tokens=16)
    [out] = lm.generate_until([request("generate_until", ("Question: Test q2: x\nAnswer:", {"until": ["\n\n"]}))])
    assert out == "Two threes make 6, but I say\n#### 1,007"
    with pytest.raises(NotImplementedError, match="no scoring backend"):
        lm.loglikelihood([request("loglikelihood", ("ctx", " cont"))])
    scored = HarnessLM(KnownAnswers(), loglikelihood_fn=lambda pairs: [(-float(len(c)), True) for _, c in pairs])
    assert scored.loglikelihood([request("loglikelihood", ("ctx", " cont"))]) == [(-5.0, True)]


def test_clear_errors_for_missing_data(gsm8k_files: tuple[Path, Path], tmp_path: Path) -> None:
    _, test = gsm8k_files
    with pytest.raises(DataSourceError, match="fewshot_path"):
        GSM8K(params={"data_path": str(test)}).load()
    with pytest.raises(DataSourceError, match="does not exist"):
        GSM8K(params={"data_path": str(tmp_path / "nope.jsonl"), "num_fewshot": 0}).load()
    assert len(GSM8K(params={"data_path": str(test), "num_fewshot": 0}).load().items) == 3
