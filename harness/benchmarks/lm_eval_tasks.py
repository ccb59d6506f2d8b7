"""lm-eval tasks: `gsm8k` (GSM8K) and any lm-eval task by name (`lm_eval`).

Our generation backend is wrapped as an lm-eval `LM` (`HarnessLM`): `generate_until` goes through an
`AnswerModel` (chat messages, so the model's own chat template applies), `loglikelihood` through a scoring
callable when one is given. Task definitions are lm-eval's own (the installed task YAMLs, built by its
`TaskManager`); for offline use the task's hub dataset is swapped for local files (`data_files`, loaded by
the `datasets` json/parquet/csv builders, which need no network).

GSM8K keeps our cached stages separate: `load` builds each prompt with lm-eval's own `fewshot_context`
(5 shots from the train split, lm-eval's sampler seeded 1234, shots as multi-turn chat like
`--apply_chat_template --fewshot_as_multiturn`); `generate` answers and cuts at the task's `until` strings;
`judge` applies the task's own filters (strict-match `#### (\\-?[0-9\\.\\,]+)`, flexible-extract
`(-?[$0-9.,]{2,})|(-?[0-9]+)` last match) and its `exact_match` metric with the task's settings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.benchmarks.base import AnswerModel, Benchmark, BenchmarkData, ScoreResult
from harness.benchmarks.data_sources import file_sha256, hub_unreachable
from harness.benchmarks.lm_eval_adapter import (  # noqa: F401 - HarnessLM, task_config re-exported
    FEWSHOT_SEED,
    SCORE_NAMES,
    HarnessLM,
    LoglikelihoodFn,
    _json_chat_template,
    apply_filter_pipeline,
    build_task,
    context_to_messages,
    cut_at_stops,
    exact_match,
    local_dataset_overrides,
    task_config,
)
from harness.errors import DataSourceError
from harness.judges.base import Judge

GSM8K_INSTALL_HINT = (
    "GSM8K is not shipped by any installed package. Offline, download the two files of openai/gsm8k (main) "
    "elsewhere (test.jsonl / train.jsonl, or the parquet files) and pass benchmarks[].params.data_path (test) "
    "and params.fewshot_path (train; or set params.num_fewshot: 0). Online, the hub dataset openai/gsm8k is used."
)


class GSM8KParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data_path: str | None = None  # the test split (openai/gsm8k main test.jsonl or parquet); else the hub
    fewshot_path: str | None = None  # the train split, the few-shot pool
    num_fewshot: int = 5
    fewshot_as_multiturn: bool = True  # shots as user/assistant turns (else one user message)


class GSM8K(Benchmark):
    name = "gsm8k"
    Params = GSM8KParams
    needs_judge = False
    headline = "exact_match_flexible"
    decoding = {"temperature": 0.0, "do_sample": False}
    task_name = "gsm8k"

    params: GSM8KParams

    def _task(self) -> tuple[Any, str, str]:
        p = self.params
        if p.data_path is None:
            why_not = hub_unreachable()
            if why_not:
                raise DataSourceError(f"gsm8k: the hub dataset openai/gsm8k cannot be loaded: {why_not}.\n"
                                      + GSM8K_INSTALL_HINT)
            task = build_task(self.task_name, offline_hint=GSM8K_INSTALL_HINT)
            return task, f"hf:{task.config.dataset_path}/{task.config.dataset_name} via lm-eval", ""
        files = {"test": p.data_path}
        if p.num_fewshot > 0:
            if p.fewshot_path is None:
                raise DataSourceError(f"gsm8k: {p.num_fewshot}-shot needs params.fewshot_path (the train split) "
                                      "beside data_path, or params.num_fewshot: 0")
            files["train"] = p.fewshot_path
        overrides = local_dataset_overrides(files)
        if "train" not in files:  # zero-shot from the test file alone: no few-shot pool to build
            overrides.update(training_split=None, fewshot_split=None)
        task = build_task(self.task_name, overrides)
        version = "-".join(file_sha256(Path(f).expanduser()) for f in files.values())
        return task, "local files " + ", ".join(f"{k}={v}" for k, v in files.items()), version

    def load(self) -> BenchmarkData:
        task, source, version = self._task()
        task.set_fewshot_seed(FEWSHOT_SEED)
        docs = list(task.test_docs() if task.has_test_docs() else task.validation_docs())
        if self.subset is not None:
            docs = docs[: self.subset]
        items = []
        for i, doc in enumerate(docs):  # in order: the sampler's draws depend on it, as in lm-eval
            context = task.fewshot_context(doc, self.params.num_fewshot, apply_chat_template=True,
                                           fewshot_as_multiturn=self.params.fewshot_as_multiturn,
                                           chat_template=_json_chat_template)
            items.append({"id": f"{self.task_name}/{i}", "doc": dict(doc), "target": str(task.doc_to_target(doc)),
                          "messages": context_to_messages(context)})
        return BenchmarkData(items=items, source=source, version=version)

    def generate(self, model: AnswerModel, data: BenchmarkData) -> list[dict[str, Any]]:
        until = task_config(self.task_name)["generation_kwargs"].get("until", [])
        outputs = model.answer([item["messages"] for item in data.items], max_new_tokens=self.max_new_tokens,
                               progress=f"{self.task_name}: answers")
        decoding = {**self.decoding, "max_new_tokens": self.max_new_tokens, "until": until,
                    "num_fewshot": self.params.num_fewshot, "fewshot_seed": FEWSHOT_SEED,
                    "fewshot_as_multiturn": self.params.fewshot_as_multiturn, "chat": True}
        return [{"id": item["id"], "output": cut_at_stops(out.text, until), "raw_output": out.text,
                 "finished": out.finished, "decoding": decoding} for item, out in zip(data.items, outputs, strict=True)]

    def judge(self, judge: Judge | None, data: BenchmarkData, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per-item correctness under each of the task's filters (no judge model involved)."""
        config = task_config(self.task_name)
        [metric] = [m for m in config["metric_list"] if m["metric"] == "exact_match"]
        metric_kwargs = {k: v for k, v in metric.items() if k not in ("metric", "aggregation", "higher_is_better")}
        by_id = {item["id"]: item for item in data.items}
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
        """exact_match_strict / exact_match_flexible (+ _stderr) in percent, the report's GSM8K columns."""
        keys = [p["name"].replace("-", "_") for p in task_config(self.task_name)["filter_list"]]
        names = {key: SCORE_NAMES.get(key, f"exact_match_{key}") for key in keys}
        renamed = [{"id": j["id"], **{names[k]: j.get(k) for k in keys}} for j in judgements]
        return _mean_metrics(renamed, list(names.values()), self.headline,
                             notes=["exact_match in percent (lm-eval reports the same as a fraction); "
                                    "stderr = sample std / sqrt(n), as lm-eval's mean_stderr"])


def _mean_metrics(records: list[dict[str, Any]], keys: list[str], headline: str,
                  notes: list[str] | None = None) -> ScoreResult:
    metrics: dict[str, float | int | None] = {"n_total": len(records)}
    for key in keys:
        values = [float(r[key]) for r in records if isinstance(r.get(key), (int, float, bool))]
        n = len(values)
        mean = sum(values) / n if n else None
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 and mean is not None else None
        metrics[key] = None if mean is None else 100.0 * mean
        metrics[f"{key}_stderr"] = None if std is None else 100.0 * std / math.sqrt(n)
    per_item = [{"id": r["id"], "score": r.get(headline)} for r in records]
    return ScoreResult(metrics=metrics, notes=list(notes or []), per_item=per_item)


class LMEvalTaskParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str  # any lm-eval task name, e.g. "arc_easy", "ifeval"
    num_fewshot: int | None = None  # None: the task's default
    data_files: dict[str, str] | None = None  # {split: local file} instead of the task's hub dataset
    apply_chat_template: bool = True
    fewshot_as_multiturn: bool = True


class LMEvalTask(Benchmark):
    """Any lm-eval task, run by `lm_eval.simple_evaluate` with our model as its `LM`.

    lm-eval generates and scores in one call, so `generate` runs it and keeps every sample's response and
    metrics; `judge` passes those on; `score` averages them per metric and filter (exact for tasks whose
    aggregation is the mean, which is most of them; `notes` carries lm-eval's own aggregate too).
    Log-likelihood tasks need `loglikelihood_fn` set on the instance (context, continuation) -> (logprob, greedy).
    """

    name = "lm_eval"
    Params = LMEvalTaskParams
    needs_judge = False
    headline = ""
    decoding = {"temperature": 0.0, "do_sample": False}
    loglikelihood_fn: LoglikelihoodFn | None = None

    params: LMEvalTaskParams

    def _task(self) -> Any:
        overrides = local_dataset_overrides(self.params.data_files) if self.params.data_files else None
        return build_task(self.params.task, overrides)

    def load(self) -> BenchmarkData:
        task = self._task()
        docs = list(task.eval_docs)
        n = len(docs) if self.subset is None else min(self.subset, len(docs))
        if self.params.data_files:
            source = "local files " + ", ".join(f"{k}={v}" for k, v in self.params.data_files.items())
            version = "-".join(file_sha256(Path(f).expanduser()) for f in self.params.data_files.values())
        else:
            source, version = f"hf:{task.config.dataset_path}/{task.config.dataset_name} via lm-eval", ""
        return BenchmarkData(items=[{"id": f"{self.params.task}/{i}", "doc_id": i} for i in range(n)],
                             source=source, version=version)

    def generate(self, model: AnswerModel, data: BenchmarkData) -> list[dict[str, Any]]:
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager

        lm = HarnessLM(model, self.max_new_tokens, self.loglikelihood_fn)
        # a pre-built task and an empty index: lm-eval then skips indexing every bundled YAML (tens of seconds)
        out = simple_evaluate(model=lm, tasks=[self._task()], task_manager=TaskManager(include_defaults=False), num_fewshot=self.params.num_fewshot,
                              limit=len(data.items), apply_chat_template=self.params.apply_chat_template,
                              fewshot_as_multiturn=self.params.fewshot_as_multiturn, log_samples=True,
                              fewshot_random_seed=FEWSHOT_SEED)
        task_results = out["results"].get(self.params.task, {})
        by_doc: dict[int, dict[str, Any]] = {}
        for sample in out["samples"].get(self.params.task, []):
            record = by_doc.setdefault(int(sample["doc_id"]), {
                "id": f"{self.params.task}/{sample['doc_id']}", "output": sample["resps"], "metrics": {},
                "decoding": {**self.decoding, "max_new_tokens": self.max_new_tokens,
                             "num_fewshot": self.params.num_fewshot, "fewshot_seed": FEWSHOT_SEED,
                             "chat": self.params.apply_chat_template,
                             "fewshot_as_multiturn": self.params.fewshot_as_multiturn}})
            for metric in sample["metrics"]:
                record["metrics"][f"{metric},{sample['filter']}"] = sample[metric]
        records = [by_doc[k] for k in sorted(by_doc)]
        if records:
            records[0]["lm_eval_aggregate"] = {k: v for k, v in task_results.items() if k != "alias"}
        return json.loads(json.dumps(records, default=str))

    def judge(self, judge: Judge | None, data: BenchmarkData, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"id": a["id"], **{k: v for k, v in a["metrics"].items()},
                 **({"lm_eval_aggregate": a["lm_eval_aggregate"]} if "lm_eval_aggregate" in a else {})}
                for a in answers]

    def score(self, judgements: list[dict[str, Any]]) -> ScoreResult:
        keys = sorted({k for j in judgements for k in j if "," in k})
        metrics: dict[str, float | int | None] = {"n_total": len(judgements)}
        for key in keys:
            values = [float(j[key]) for j in judgements if isinstance(j.get(key), (int, float, bool))]
            metrics[key] = sum(values) / len(values) if values else None
        aggregate = next((j["lm_eval_aggregate"] for j in judgements if "lm_eval_aggregate" in j), None)
        notes = [f"lm-eval task {self.params.task}: per-item mean of lm-eval's sample metrics (native scale)"]
        if aggregate:
            notes.append(f"lm-eval's own aggregate: {json.dumps(aggregate, default=str)[:1000]}")
        headline = keys[0] if keys else ""
        return ScoreResult(metrics=metrics, notes=notes,
                           per_item=[{"id": j["id"], "score": j.get(headline)} for j in judgements])
