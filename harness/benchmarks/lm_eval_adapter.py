"""Our models inside lm-eval: the `LM` adapter and lm-eval's own task building, filters and metric.

`HarnessLM` wraps an `AnswerModel` as an lm-eval `LM` (`generate_until` through chat messages, so the
model's own chat template applies; `loglikelihood` through a scoring callable when one is given). Tasks
are lm-eval's own definitions (installed YAMLs via its `TaskManager`), with the hub dataset swapped for
local files when offline. The benchmarks built on this live in `lm_eval_tasks.py`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.benchmarks.base import AnswerModel
from harness.benchmarks.lm_eval_chat import context_to_messages, messages_to_context
from harness.benchmarks.lm_eval_loglikelihood import make_loglikelihood_fn
from harness.errors import DataSourceError

if TYPE_CHECKING:
    from harness.models.base import LoadedModel

FEWSHOT_SEED = 1234  # lm_eval.defaults.DEFAULT_OTHER_SEED, simple_evaluate's fewshot_random_seed
SCORE_NAMES = {"strict_match": "exact_match_strict", "flexible_extract": "exact_match_flexible"}
LoglikelihoodFn = Callable[[list[tuple[str, str]]], list[tuple[float, bool]]]
# What `HarnessLM.chat_template` names its template: lm-eval logs it as the run's `chat_template` (and its
# SHA-256); the turns themselves travel as marked JSON contexts (lm_eval_chat.py).
CHAT_TEMPLATE_NAME = "harness-chat-messages"
# lm-eval's answer length when a task's generation_kwargs set no max_gen_toks (HFLM.max_gen_toks,
# lm_eval/models/huggingface.py), which our benchmarks default to as well.
LM_EVAL_MAX_GEN_TOKS = 256


def _builder_for(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".json", ".jsonl"):
        return "json"
    if suffix in (".parquet", ".csv"):
        return suffix[1:]
    raise DataSourceError(f"{path}: unsupported data file type {suffix!r}; use .jsonl, .json, .parquet or .csv")


def local_dataset_overrides(data_files: dict[str, str]) -> dict[str, Any]:
    """lm-eval task-config overrides that load the task's splits from local files instead of the hub."""
    paths = {split: Path(p).expanduser() for split, p in data_files.items()}
    for split, path in paths.items():
        if not path.is_file():
            raise DataSourceError(f"data file for split {split!r} does not exist: {path}")
    builders = {_builder_for(p) for p in paths.values()}
    if len(builders) != 1:
        raise DataSourceError(f"all local data files of one task must have one format, got {sorted(builders)}")
    return {"dataset_path": builders.pop(), "dataset_name": None,
            "dataset_kwargs": {"data_files": {split: str(p) for split, p in paths.items()}}}


@functools.lru_cache(maxsize=1)
def _task_manager() -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager()  # indexes every bundled YAML: slow, so once per process and only when needed


def _task_yaml(name: str) -> Path:
    import lm_eval

    tasks = Path(lm_eval.__file__).parent / "tasks"
    # The usual layouts (tasks/gsm8k/gsm8k.yaml, tasks/arc/arc_easy.yaml, tasks/gsm8k/gsm8k-cot.yaml) are found
    # by name in milliseconds; only other tasks need the full index.
    candidates = [tasks / name / f"{name}.yaml", *sorted(tasks.glob(f"*/{name}.yaml")),
                  *sorted(tasks.glob(f"*/{name.replace('_', '-')}.yaml"))]
    for path in candidates:
        if path.is_file() and f"\ntask: {name}\n" in "\n" + path.read_text(encoding="utf-8"):
            return path
    entry = _task_manager().task_index.get(name)
    if entry is None or getattr(entry, "yaml_path", None) is None:
        raise DataSourceError(f"lm-eval has no task named {name!r} (see `lm-eval ls tasks`)")
    return Path(entry.yaml_path)


@functools.lru_cache(maxsize=16)
def _task_config_cached(name: str) -> str:
    from lm_eval.tasks._yaml_loader import load_yaml

    path = _task_yaml(name)
    cfg = load_yaml(path, resolve_func=False)  # includes merged; !function kept as text here
    if cfg.get("task") != name:
        raise DataSourceError(f"lm-eval {name!r} ({path}) is not a single task; name one task")
    return json.dumps({**cfg, "__yaml_path__": str(path)}, default=str)


def task_config(name: str) -> dict[str, Any]:
    """The installed lm-eval task's own config (YAML, includes merged), without loading any data."""
    return dict(json.loads(_task_config_cached(name)))


def full_task_spec(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The task's config with functions resolved and `overrides` applied: an inline spec lm-eval accepts."""
    from lm_eval.tasks._yaml_loader import load_yaml

    yaml_path = Path(task_config(name)["__yaml_path__"])
    if "ifeval" in yaml_path.parts:  # resolving its functions imports the checker, which downloads NLTK data
        from harness.benchmarks.nltk_punkt import ensure_punkt_tab

        ensure_punkt_tab()
    cfg = dict(load_yaml(yaml_path, resolve_func=True))
    cfg.pop("tag", None)  # an inline task must not re-register the bundled tags
    return {**cfg, **(overrides or {})}


def build_task(name: str, overrides: dict[str, Any] | None = None, offline_hint: str = "") -> Any:
    """lm-eval's own task object for `name` (with config overrides), or a DataSourceError saying why not."""
    from lm_eval.api.task import ConfigurableTask

    spec = full_task_spec(name, overrides)
    try:
        return ConfigurableTask(config=spec)
    except Exception as exc:  # noqa: BLE001 - hub unreachable / dataset missing: say what to do
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise DataSourceError(
            f"lm-eval task {name!r}: its data could not be loaded ({type(exc).__name__}: {first}). "
            + (offline_hint or "Offline, pass local files: params.data_files {split: path} "
               "(e.g. {test: test.jsonl, train: train.jsonl}).")
        ) from None


def cut_at_stops(text: str, until: list[str] | tuple[str, ...]) -> str:
    """lm-eval's post-generation cut: keep the text before the first occurrence of any stop string."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


class HarnessLM:
    """Factory for the lm-eval `LM` subclass (built lazily so importing this module does not import lm-eval)."""

    def __new__(cls, model: AnswerModel, max_new_tokens: int = 256,
                loglikelihood_fn: LoglikelihoodFn | None = None) -> Any:
        return _lm_class()(model, max_new_tokens, loglikelihood_fn)


def _lm_class() -> type:
    from lm_eval.api.model import LM

    class _HarnessLM(LM):  # type: ignore[misc]
        def __init__(self, model: AnswerModel, max_new_tokens: int, loglikelihood_fn: LoglikelihoodFn | None):
            super().__init__()
            self.answer_model = model
            self.max_new_tokens = max_new_tokens
            self.loglikelihood_fn = loglikelihood_fn

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
            by_budget: dict[int, list[int]] = {}
            for i, request in enumerate(requests):
                budget = int(request.args[1].get("max_gen_toks", self.max_new_tokens))
                by_budget.setdefault(budget, []).append(i)
            outputs = [""] * len(requests)
            for budget, indices in by_budget.items():
                conversations = [context_to_messages(requests[i].args[0]) for i in indices]
                answers = self.answer_model.answer(conversations, max_new_tokens=budget, progress="lm-eval: generate")
                # the raw continuation, as lm-eval's own models return it (they strip nothing)
                for i, text in zip(indices, (a.continuation for a in answers), strict=True):
                    until = requests[i].args[1].get("until") or []
                    outputs[i] = cut_at_stops(text, [until] if isinstance(until, str) else until)
            return outputs

        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
            if self.loglikelihood_fn is None:
                raise NotImplementedError(
                    "this lm-eval task scores continuations by log-likelihood (multiple choice / perplexity), "
                    "and no scoring backend was given to HarnessLM (loglikelihood_fn); use a generate_until task "
                    "such as gsm8k, or run the task with a model backend that provides sequence log-probs")
            return list(self.loglikelihood_fn([(r.args[0], r.args[1]) for r in requests]))

        def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
            if self.loglikelihood_fn is None:
                raise NotImplementedError("this lm-eval task needs rolling log-likelihoods (perplexity), which "
                                          "HarnessLM only computes with a loglikelihood_fn")
            return [lp for lp, _ in self.loglikelihood_fn([("", r.args[0]) for r in requests])]

        def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
            return messages_to_context(chat_history, add_generation_prompt)

        @property
        def tokenizer_name(self) -> str:
            return f"harness:{self.answer_model.name}"

        def chat_template(self, chat_template: bool | str = False) -> str | None:
            return CHAT_TEMPLATE_NAME

    return _HarnessLM


def loglikelihood_fn_for(loaded: LoadedModel, batch_size: int = 8) -> LoglikelihoodFn:
    """`HarnessLM`'s scoring callable for a loaded model: (context, continuation) pairs -> (sum log-prob of the
    continuation, is it the greedy continuation), tokenised as lm-eval's HFLM does, computed by our `Scorer`
    (see `lm_eval_loglikelihood.py`). Set it as `LMEvalTask.loglikelihood_fn` for multiple-choice tasks."""
    return make_loglikelihood_fn(loaded, batch_size)


# --- per-item filters and metrics, from the task's own config ----------------------------------------------


def apply_filter_pipeline(steps: list[dict[str, Any]], output: str, doc: dict[str, Any]) -> Any:
    """One lm-eval filter pipeline (e.g. regex then take_first) on one response, with lm-eval's filter classes."""
    from lm_eval.api.registry import get_filter

    responses: Any = [[output]]
    for step in steps:
        kwargs = {k: v for k, v in step.items() if k != "function"}
        responses = list(get_filter(step["function"])(**kwargs).apply(responses, [doc]))
    return responses[0]


def exact_match(prediction: str, reference: str, **metric_kwargs: Any) -> float:
    from lm_eval.api.metrics import exact_match_hf_evaluate

    return float(exact_match_hf_evaluate(predictions=[prediction], references=[reference],
                                         **metric_kwargs)["exact_match"])
