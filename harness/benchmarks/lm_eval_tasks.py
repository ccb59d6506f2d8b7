"""Any lm-eval task by name (`lm_eval`), run by lm-eval itself with our model as its `LM`.

Our generation backend is wrapped as an lm-eval `LM` (`HarnessLM`): `generate_until` goes through an
`AnswerModel` (chat messages, so the model's own chat template applies), `loglikelihood` through a scoring
callable when one is given (`loglikelihood_fn_for` builds it from a loaded model). Task definitions are
lm-eval's own (the installed task YAMLs); for offline use the task's hub dataset is swapped for local files
(`data_files`, loaded by the `datasets` json/parquet/csv builders, which need no network).
GSM8K, with its own cached stages and protocols, is `gsm8k.py` (re-exported here).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.benchmarks import lm_eval_export
from harness.benchmarks.base import AnswerModel, Benchmark, BenchmarkData, OfficialExport, ScoreResult
from harness.benchmarks.data_sources import file_sha256
from harness.benchmarks.gsm8k import GSM8K  # noqa: F401 - re-exported (its former home)
from harness.benchmarks.lm_eval_adapter import (  # noqa: F401 - HarnessLM, task_config re-exported
    FEWSHOT_SEED,
    HarnessLM,
    LoglikelihoodFn,
    build_task,
    full_task_spec,
    local_dataset_overrides,
    loglikelihood_fn_for,
    task_config,
)
from harness.benchmarks.lm_eval_aggregate import aggregate, json_value
from harness.errors import DataSourceError
from harness.judges.base import Judge


class LMEvalTaskParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    task: str
    """Any lm-eval task name, e.g. "arc_easy", "ifeval"."""
    num_fewshot: int | None = None
    """None: the task's default."""
    data_files: dict[str, str] | None = None
    """{split: local file} instead of the task's hub dataset."""
    apply_chat_template: bool = True
    """Format prompts with the model's chat template (lm-eval's --apply_chat_template)."""
    fewshot_as_multiturn: bool = True
    """Few-shot examples as user/assistant turns (lm-eval's --fewshot_as_multiturn)."""


class LMEvalTask(Benchmark):
    """Any lm-eval task, run by `lm_eval.simple_evaluate` with our model as its `LM`.

    lm-eval generates and scores in one call, so `generate` runs it and keeps every sample's response and
    metrics (and the sample itself as lm-eval logged it, for `export_official`); `judge` passes those on; `score` aggregates them per metric and filter with the aggregation the
    task declares (`lm_eval_aggregate`: corpus-level bleu, f1, mcc, perplexity as lm-eval computes them),
    headed by the task's first declared metric; `notes` carries lm-eval's own aggregate too.
    Log-likelihood (multiple-choice) tasks need `loglikelihood_fn` set on the instance: (context, continuation)
    pairs -> (logprob, greedy); `loglikelihood_fn_for(loaded)` builds it from the model under test.
    """

    name = "lm_eval"
    Params = LMEvalTaskParams
    needs_judge = False
    headline = ""
    decoding = {"temperature": 0.0, "do_sample": False}
    loglikelihood_fn: LoglikelihoodFn | None = None  # default: the model under test's own (needs_weights)
    needs_weights = True
    answers_version = 1  # 1: raw continuations (lm-eval strips nothing); numpy values logged as numbers

    params: LMEvalTaskParams

    def _task(self) -> Any:
        files = self.params.data_files
        if not files:
            return build_task(self.params.task)
        overrides = local_dataset_overrides(files)
        config = task_config(self.params.task)
        evaluated = config.get("test_split") or config.get("validation_split")
        if evaluated not in files:
            raise DataSourceError(f"lm-eval task {self.params.task!r} is evaluated on its {evaluated!r} split: name "
                                  f"that split in params.data_files (got {sorted(files)})")
        # Splits the files lack are not used (e.g. a zero-shot run needs no train split; lm-eval would fail
        # building its few-shot sampler from a split that is not there).
        for role in ("training_split", "validation_split", "fewshot_split"):
            if config.get(role) and config[role] not in files and config[role] != evaluated:
                overrides[role] = None
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

    def _own_scoring(self, model: AnswerModel) -> LoglikelihoodFn:
        """Multiple-choice tasks score continuations with the model under test itself (built on first use:
        generation-only tasks never need its weights)."""
        build = functools.cache(lambda: loglikelihood_fn_for(model.in_memory(), batch_size=model.scoring_batch_size))
        return lambda *args, **kwargs: build()(*args, **kwargs)

    def generate(self, model: AnswerModel, data: BenchmarkData) -> list[dict[str, Any]]:
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager

        lm = HarnessLM(model, self.max_new_tokens, self.loglikelihood_fn or self._own_scoring(model))
        # a pre-built task and an empty index: lm-eval then skips indexing every bundled YAML (tens of seconds)
        out = simple_evaluate(model=lm, tasks=[self._task()], task_manager=TaskManager(include_defaults=False), num_fewshot=self.params.num_fewshot,
                              limit=len(data.items), apply_chat_template=self.params.apply_chat_template,
                              fewshot_as_multiturn=self.params.fewshot_as_multiturn, log_samples=True,
                              fewshot_random_seed=FEWSHOT_SEED,
                              # lm-eval's bootstrap of corpus metrics' stderr (100,000 refits of mcc, f1, ...)
                              # takes minutes and only reached a note; `score` gives closed-form stderrs.
                              bootstrap_iters=0)
        task_results = out["results"].get(self.params.task, {})
        by_doc: dict[int, dict[str, Any]] = {}
        for sample in out["samples"].get(self.params.task, []):
            record = by_doc.setdefault(int(sample["doc_id"]), {
                "id": f"{self.params.task}/{sample['doc_id']}", "output": sample["resps"], "metrics": {},
                "decoding": {**self.decoding, "max_new_tokens": self.max_new_tokens,
                             "num_fewshot": self.params.num_fewshot, "fewshot_seed": FEWSHOT_SEED,
                             "chat": self.params.apply_chat_template,
                             "fewshot_as_multiturn": self.params.fewshot_as_multiturn},
                "lm_eval_samples": []})
            for metric in sample["metrics"]:
                record["metrics"][f"{metric},{sample['filter']}"] = sample[metric]
            record["lm_eval_samples"].append(sample)  # as lm-eval logged it (one per filter): `export_official`
        records = [by_doc[k] for k in sorted(by_doc)]
        if records:
            records[0]["lm_eval_aggregate"] = {k: v for k, v in task_results.items() if k != "alias"}
            records[0]["lm_eval_run"] = _run_facts(out, self.params.task)
        return json.loads(json.dumps(records, default=json_value))

    def judge(self, judge: Judge | None, data: BenchmarkData, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"id": a["id"], **{k: v for k, v in a["metrics"].items()},
                 **({"lm_eval_aggregate": a["lm_eval_aggregate"]} if "lm_eval_aggregate" in a else {})}
                for a in answers]

    def score(self, judgements: list[dict[str, Any]]) -> ScoreResult:
        result = aggregate(judgements, full_task_spec(self.params.task))
        metrics: dict[str, float | int | None] = {**result.metrics, "n_total": len(judgements)}
        official = next((j["lm_eval_aggregate"] for j in judgements if "lm_eval_aggregate" in j), None)
        how = ", ".join(f"{k} {v}" for k, v in result.aggregations.items())
        notes = [f"lm-eval task {self.params.task}: lm-eval's aggregations of its sample metrics ({how}; native "
                 f"scale); headline {result.headline}, the task's first declared metric"]
        if official:
            notes.append(f"lm-eval's own aggregate: {json.dumps(official, default=str)[:1000]}")
        # Per-item scores only where the headline is a mean of them (a corpus metric has no per-item value).
        per_item = ([{"id": j["id"], "score": j.get(result.headline)} for j in judgements]
                    if result.per_item_mean else [])
        return ScoreResult(metrics=metrics, notes=notes, per_item=per_item, headline=result.headline,
                           lower_is_better=result.lower_is_better)

    # ------------------------------------------------------------------ interop
    def export_official(self, data: BenchmarkData, answers: list[dict[str, Any]],
                        judgements: list[dict[str, Any]] | None, export: OfficialExport) -> list[Path]:
        """lm-eval's `--log_samples` files (lm_eval_export.py): the samples lm-eval logged in the run, and the
        task's results as `score` aggregates them (lm-eval's scale and keys). Answers made before the run kept
        lm-eval's samples give samples with only doc_id, resps, filter and metric values (the rest null)."""
        task = self.params.task
        judged = judgements if judgements is not None else self.judge(None, data, answers)
        config, spec = task_config(task), full_task_spec(task)
        samples = lm_eval_export.samples_in_logging_order([_logged_samples(a) for a in answers])
        entry = lm_eval_export.task_results(task, config.get("task_alias", task), judged, spec)
        run = self._described_run(config, spec, answers, len(judged), export.tstamp)
        tracker = lm_eval_export.tracker_fields(export.model, self.params.fewshot_as_multiturn,
                                                chat=self.params.apply_chat_template)
        document = lm_eval_export.results_document(task, entry, run, samples, tracker, export.model)
        return lm_eval_export.write_files(export, task, samples, document)

    def _described_run(self, config: dict[str, Any], spec: dict[str, Any], answers: list[dict[str, Any]],
                       n_effective: int, tstamp: float) -> dict[str, Any]:
        """The results file's description of the run: what lm-eval recorded in it (the answers' `lm_eval_run`)
        over what the task's YAML and the params say. Its task config stays the YAML's: the run's own held
        function objects, whose text differs from process to process, and was not kept."""
        task = self.params.task
        facts: dict[str, Any] = next((a["lm_eval_run"] for a in answers if "lm_eval_run" in a), {})
        shots = self.params.num_fewshot if self.params.num_fewshot is not None else config.get("num_fewshot", 0)
        run = lm_eval_export.run_description(task, config, spec, num_fewshot=shots,
                                             n_original=(facts.get("n-samples") or {}).get("original"),
                                             n_effective=n_effective, tstamp=tstamp)
        run.update({key: {task: facts[key]} for key in ("versions", "n-shot", "higher_is_better", "n-samples")
                    if key in facts})
        run.update({"config": facts["config"]} if facts.get("config") else {})
        return run


def _run_facts(out: dict[str, Any], task: str) -> dict[str, Any]:
    """What simple_evaluate's results say about this run beyond its numbers (the deterministic parts: not the
    date, the environment, or task configs holding function objects), for the results file of an export."""
    facts = {key: out[key][task] for key in ("versions", "n-shot", "higher_is_better", "n-samples")
             if task in (out.get(key) or {})}
    return {**facts, "config": out.get("config")}


def _logged_samples(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """A doc's samples as lm-eval logged them, or rebuilt from its metric values for older answers."""
    if answer.get("lm_eval_samples"):
        return list(answer["lm_eval_samples"])
    doc_id = int(str(answer["id"]).rsplit("/", 1)[1])
    return lm_eval_export.unlogged_samples(doc_id, answer.get("output"), answer.get("metrics") or {})
