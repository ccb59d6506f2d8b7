"""lm-eval's `--log_samples` files for one row of an lm-eval benchmark (gsm8k, ifeval, lm_eval): the samples
file `samples_<task>_<date>.jsonl` and the results file `results_<date>.json`, as lm-eval 0.4.x writes them.

Sources (lm_eval 0.4.13, checked against files its own `EvaluationTracker` wrote for a run of `HarnessLM`,
tests/test_export_alpaca_lm_eval.py):
* a sample is the `example` dict of `evaluator.evaluate` (one per doc AND filter, the filters outer, docs in
  order): doc_id, doc, target, arguments (each request's args), resps, filtered_resps, filter, metrics (the
  names), doc_hash = sha256 of `json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False)`,
  prompt_hash = sha256 of the first request's context, target_hash = sha256 of `str(target)`, then each
  metric's per-doc value; `EvaluationTracker.save_results_samples` rewrites arguments as {gen_args_i: {arg_j}},
  resps and filtered_resps as strings (`sanitize_list`), target as `str(target)`, one JSON line per sample;
* the results file is `simple_evaluate`'s dict without `samples` (evaluator_utils.py `EvalAcc._to_eval_results`:
  results {task: {name, alias, sample_len, "<metric>,<filter>", "<metric>_stderr,<filter>"}}, group_subtasks,
  configs, versions, n-shot, higher_is_better, n-samples {original, effective}; simple_evaluate: config,
  git_hash, date, and `loggers/utils.add_env_info`'s pretty_env_info, transformers_version, lm_eval_version,
  upper_git_hash), plus `save_results_aggregated`'s task_hashes (sha256 of the samples' concatenated
  doc+prompt+target hashes) and `asdict(GeneralConfigTracker)`, dumped with indent=2;
* the file names' `<date>` is `datetime.now().isoformat().replace(":", "-")`; here it is the run's own time
  (`OfficialExport.tstamp`, in UTC), so an export is the same wherever and whenever it is made. lm-eval puts
  both files in `<output_path>/<model_name_sanitized>/`; an export's folder is already the row's own.

The metric values come from the run: per doc, its judgements; per task, `lm_eval_aggregate.aggregate` of those
(lm-eval's `_compute_task_aggregations`: the `lm_eval` benchmark's score itself, and gsm8k's and ifeval's scores
as fractions, not percent). Where the run recorded nothing of a field lm-eval writes, it is null.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.benchmarks.base import OfficialExport
from harness.benchmarks.lm_eval_adapter import CHAT_TEMPLATE_NAME, FEWSHOT_SEED, LM_EVAL_MAX_GEN_TOKS
from harness.benchmarks.lm_eval_aggregate import aggregate, task_metrics
from harness.store import write_text_atomic

NO_STDERR = "N/A"  # lm-eval's stderr where it computes none (`_compute_task_aggregations`)
# simple_evaluate's `model_source` for a model passed as an `LM` object, as HarnessLM is.
MODEL_SOURCE = "CUSTOM"
# simple_evaluate's bootstrap_iters default: with it lm-eval gives `mean` its closed-form stderr and an
# aggregation that is neither bootstrappable nor closed-form (IFEval's agg_inst_level_acc) none.
DEFAULT_BOOTSTRAP_ITERS = 100000


@dataclass(frozen=True)
class DocResult:
    """One doc's requests and results under one filter: what lm-eval's `evaluate` logs for it."""

    doc_id: int
    doc: Any
    target: Any
    arguments: list[tuple[Any, ...]]  # each request's args: (context, generation kwargs) for generate_until
    resps: list[list[Any]]  # each request's responses, unfiltered
    filtered_resps: list[Any]  # each request's response after this filter
    filter: str
    metrics: dict[str, Any]  # the task's process_results for this doc: metric -> value


def hash_string(text: str) -> str:
    from lm_eval.utils import hash_string as lm_eval_hash

    return str(lm_eval_hash(text))


def logged_sample(result: DocResult) -> dict[str, Any]:
    """evaluator.py's `example` dict (before the tracker sanitises it)."""
    from lm_eval.utils import handle_non_serializable

    doc_json = json.dumps(result.doc, indent=2, default=handle_non_serializable, ensure_ascii=False)
    return {"doc_id": result.doc_id, "doc": result.doc, "target": result.target, "arguments": result.arguments,
            "resps": result.resps, "filtered_resps": result.filtered_resps, "filter": result.filter,
            "metrics": list(result.metrics), "doc_hash": hash_string(doc_json),
            "prompt_hash": hash_string(result.arguments[0][0]), "target_hash": hash_string(str(result.target)),
            **result.metrics}


def sanitised_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """`EvaluationTracker.save_results_samples`'s rewriting of a sample before it is dumped."""
    from lm_eval.utils import sanitize_list

    def sanitised(value: Any) -> Any:  # a field the run did not record stays null
        return None if value is None else sanitize_list(value)

    arguments = None if sample["arguments"] is None else {
        f"gen_args_{i}": {f"arg_{j}": arg for j, arg in enumerate(args)} for i, args in enumerate(sample["arguments"])}
    return {**sample, "arguments": arguments, "resps": sanitised(sample["resps"]),
            "filtered_resps": sanitised(sample["filtered_resps"]),
            "target": None if sample["target"] is None else str(sample["target"])}


def generation_kwargs(config: dict[str, Any], max_new_tokens: int) -> dict[str, Any]:
    """A generate_until request's kwargs: the task's `generation_kwargs`, with the run's answer length where it
    is not the length lm-eval would have used (as `--gen_kwargs max_gen_toks=N` would log it)."""
    kwargs = dict(config.get("generation_kwargs") or {})
    if max_new_tokens != kwargs.get("max_gen_toks", LM_EVAL_MAX_GEN_TOKS):
        kwargs["max_gen_toks"] = max_new_tokens
    return kwargs


def samples_in_logging_order(per_doc: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each doc's samples (one per filter) in the order lm-eval logs them: filters outer, docs inner."""
    n_filters = max((len(samples) for samples in per_doc), default=0)
    return [samples[f] for f in range(n_filters) for samples in per_doc if f < len(samples)]


def unlogged_samples(doc_id: int, resps: Any, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """A doc's samples rebuilt from "<metric>,<filter>" values alone (answers made before the run kept lm-eval's
    samples): the doc, target, requests, filtered responses and hashes are unknown and null."""
    by_filter: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        metric, _, flt = key.partition(",")
        by_filter.setdefault(flt, {})[metric] = value
    return [{"doc_id": doc_id, "doc": None, "target": None, "arguments": None, "resps": resps,
             "filtered_resps": None, "filter": flt, "metrics": list(values), "doc_hash": None, "prompt_hash": None,
             "target_hash": None, **values} for flt, values in by_filter.items()]


def answered_length(answers: list[dict[str, Any]], default: int) -> int:
    """The answer length the run decoded with (its answers' `decoding.max_new_tokens`), else `default`."""
    decoding = answers[0].get("decoding") if answers else None
    return int(decoding.get("max_new_tokens", default)) if isinstance(decoding, dict) else default


def metric_records(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per doc (in doc order), its metric values keyed "<metric>,<filter>": the records `aggregate` reads."""
    by_doc: dict[int, dict[str, Any]] = {}
    for sample in samples:
        record = by_doc.setdefault(int(sample["doc_id"]), {})
        for metric in sample["metrics"]:
            record[f"{metric},{sample['filter']}"] = sample[metric]
    return [by_doc[k] for k in sorted(by_doc)]


def task_results(task: str, alias: str, records: list[dict[str, Any]], spec: dict[str, Any]) -> dict[str, Any]:
    """The task's entry of lm-eval's `results`: each "<metric>,<filter>" aggregated as the task declares, with
    "<metric>_stderr,<filter>" (closed-form where lm-eval has one, else "N/A")."""
    aggregated = aggregate(records, spec).metrics
    entry: dict[str, Any] = {"name": task, "alias": alias, "sample_len": len(records)}
    for key, value in aggregated.items():
        if key.endswith("_stderr"):
            continue
        metric, _, flt = key.partition(",")
        entry[key] = value
        stderr = aggregated.get(f"{key}_stderr")
        entry[f"{metric}_stderr,{flt}"] = NO_STDERR if stderr is None else stderr
    return entry


def _portable(value: Any, prefix: str) -> Any:
    """`value` with the installed lm-eval's location cut from the paths of its `!function` entries, so the
    file does not depend on where lm-eval is installed ("lm_eval/tasks/ifeval/utils.process_results")."""
    if isinstance(value, str) and value.startswith(prefix):
        return value[len(prefix):]
    if isinstance(value, dict):
        return {k: _portable(v, prefix) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v, prefix) for v in value]
    return value


def task_yaml_config(config: dict[str, Any]) -> dict[str, Any]:
    """The installed task's YAML config (`lm_eval_adapter.task_config`) as the results file's `configs` entry:
    lm-eval writes its task object's `dump_config()`, whose source this is."""
    import lm_eval

    prefix = str(Path(lm_eval.__file__).parent.parent) + "/"
    return {k: _portable(v, prefix) for k, v in config.items() if not k.startswith("__")}


def run_description(task: str, config: dict[str, Any], spec: dict[str, Any], *, num_fewshot: int,
                    n_original: int | None, n_effective: int, tstamp: float) -> dict[str, Any]:
    """The results file's description of a run lm-eval did not drive (gsm8k, ifeval: the harness ran the task's
    own prompts, filters and metrics; `config` its YAML, `spec` with functions resolved): what the run fixes,
    and null where it recorded nothing (the environment, batch sizes, the device, lm-eval's global seeds, which
    greedy decoding never uses)."""
    config = task_yaml_config(config)
    return {
        "group_subtasks": {},
        "configs": {task: {**config, "num_fewshot": num_fewshot}},
        "versions": {task: (config.get("metadata") or {}).get("version")},
        "n-shot": {task: num_fewshot},
        "higher_is_better": {task: {m.name: m.higher_is_better for m in task_metrics(spec)}},
        "n-samples": {task: {"original": n_original, "effective": n_effective}},
        "config": {"model": None, "model_args": None, "batch_size": None, "batch_sizes": [], "device": None,
                   "use_cache": None,
                   "limit": n_effective if n_original is None or n_effective < n_original else None,
                   "bootstrap_iters": DEFAULT_BOOTSTRAP_ITERS, "gen_kwargs": None, "random_seed": None,
                   "numpy_seed": None, "torch_seed": None, "fewshot_seed": FEWSHOT_SEED},
        "git_hash": None, "date": tstamp,
        "pretty_env_info": None, "transformers_version": None, "lm_eval_version": None, "upper_git_hash": None,
    }


def tracker_fields(model: str, fewshot_as_multiturn: bool | None, chat: bool) -> dict[str, Any]:
    """`asdict(GeneralConfigTracker)` as simple_evaluate fills it for HarnessLM (no system instruction; the
    evaluation time is not recorded by the run: null)."""
    from lm_eval.utils import sanitize_model_name

    template = CHAT_TEMPLATE_NAME if chat else None
    return {"model_source": MODEL_SOURCE, "model_name": model, "model_name_sanitized": sanitize_model_name(model),
            "system_instruction": None, "system_instruction_sha": None,
            "fewshot_as_multiturn": fewshot_as_multiturn, "chat_template": template,
            "chat_template_sha": hash_string(template) if template else None,
            "total_evaluation_time_seconds": None}


def results_document(task: str, entry: dict[str, Any], run: dict[str, Any], samples: list[dict[str, Any]],
                     tracker: dict[str, Any], model: str) -> dict[str, Any]:
    """The results file: `results`, the run's description (its `config.model` renamed to the row), the task's
    hash over its samples, and the tracker's fields, in lm-eval's key order."""
    hashed = bool(samples) and all(s.get("doc_hash") is not None for s in samples)
    hashes = "".join(str(s["doc_hash"]) + str(s["prompt_hash"]) + str(s["target_hash"]) for s in samples)
    described = {k: ({**v, "model": model} if k == "config" else v) for k, v in run.items()}
    return {"results": {task: entry}, **described, "task_hashes": {task: hash_string(hashes)} if hashed else {},
            **tracker}


def date_id(tstamp: float) -> str:
    """The `<date>` of lm-eval's file names for the run's time (ISO, ":" -> "-", microseconds always)."""
    when = datetime.fromtimestamp(tstamp, tz=UTC).replace(tzinfo=None)
    return when.isoformat(timespec="microseconds").replace(":", "-")


def _dumps(obj: Any, **kwargs: Any) -> str:
    from lm_eval.utils import handle_non_serializable

    return json.dumps(obj, default=handle_non_serializable, ensure_ascii=False, **kwargs)


def write_files(export: OfficialExport, task: str, samples: list[dict[str, Any]], results: dict[str, Any]) -> list[Path]:
    """Both files under `export.out`, named with the run's date: [results, samples]."""
    stamp = date_id(export.tstamp)
    results_path = export.out / f"results_{stamp}.json"
    samples_path = export.out / f"samples_{task}_{stamp}.jsonl"
    write_text_atomic(results_path, _dumps(results, indent=2))
    write_text_atomic(samples_path, "".join(_dumps(sanitised_sample(s)) + "\n" for s in samples))
    return [results_path, samples_path]


def export_task(export: OfficialExport, task: str, docs: list[DocResult], config: dict[str, Any],
                spec: dict[str, Any], *, num_fewshot: int, n_original: int,
                fewshot_as_multiturn: bool | None) -> list[Path]:
    """Both files of a task the harness ran on lm-eval's definitions itself (gsm8k, ifeval): `docs` in lm-eval's
    logging order (filters outer, docs inner), their metric values aggregated as lm-eval aggregates them."""
    samples = [logged_sample(doc) for doc in docs]
    records = metric_records(samples)
    entry = task_results(task, task, records, spec)
    run = run_description(task, config, spec, num_fewshot=num_fewshot, n_original=n_original,
                          n_effective=len(records), tstamp=export.tstamp)
    tracker = tracker_fields(export.model, fewshot_as_multiturn, chat=True)
    return write_files(export, task, samples, results_document(task, entry, run, samples, tracker, export.model))
