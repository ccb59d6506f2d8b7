"""What would fail hours later, found before any work: `pad-harness validate` and the start of every run.

Each check returns the problems it finds as one-line messages that say what to do; `preflight` runs them
all (it does not stop at the first) and raises one `ConfigError` listing every problem:
- generation backends that are not registered (`generation_backend`, `sampling.backend`);
- judges that cannot run: a missing API key for the judge of any benchmark that needs one;
- answer lengths beyond a model's context (`benchmarks[].max_new_tokens`, resolved to the benchmark's
  default, plus the longest prompt the budget allows), checked against each answering model's config;
- benchmark subsets larger than their data;
- `output_dir` placeholders other than `{name}`.
Nothing here loads model weights: contexts come from config files (`model_context_length`).
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

from harness.benchmarks.base import Benchmark, benchmark_from_spec
from harness.config import Experiment, ModelSpec
from harness.errors import ConfigError, DataSourceError, HarnessError


def preflight(exp: Experiment, source: str = "<experiment>") -> None:
    benches = [(i, spec, benchmark_from_spec(spec)) for i, spec in enumerate(exp.benchmarks)]
    problems = (_backends(exp) + _output_dir(exp) + _judges(exp, benches) + _contexts(exp, benches)
                + _subsets(benches))
    if problems:
        raise ConfigError(f"{source}: " + "\n  ".join([f"{len(problems)} problem(s) found before running:"]
                                                     + problems))


def _backends(exp: Experiment) -> list[str]:
    from harness.registry import BACKENDS

    out = []
    for where, name in (("generation_backend", exp.generation_backend), ("sampling.backend", exp.sampling.backend)):
        try:
            BACKENDS.get(name)
        except Exception as exc:
            out.append(f"{where}: {exc}")
    return out


def _output_dir(exp: Experiment) -> list[str]:
    fields = {f for _, f, _, _ in string.Formatter().parse(exp.output_dir) if f is not None}
    unknown = sorted(fields - {"name"})
    if unknown:
        return [f"output_dir {exp.output_dir!r}: unknown placeholder(s) {unknown}; the only one is {{name}}"]
    return []


Benches = list[tuple[int, Any, Benchmark]]  # (index, BenchmarkSpec, the benchmark it builds)


def _judges(exp: Experiment, benches: Benches) -> list[str]:
    from harness.judges.choice import judge_spec_for
    from harness.registry import JUDGES

    out = []
    for i, spec, bench in benches:
        if not bench.needs_judge:
            continue
        try:
            judge = judge_spec_for(exp.judge, spec, bench)
            cls: Any = JUDGES.get(judge.backend)
        except HarnessError as exc:
            out.append(f"benchmarks.{i} ({spec.name}) judge: {exc}")
            continue
        problem = cls.preflight(judge)
        if problem:
            out.append(f"benchmarks.{i} ({spec.name}) judge: {problem}")
    return sorted(set(out), key=out.index)


def _contexts(exp: Experiment, benches: Benches) -> list[str]:
    out = []
    for who, model in (("teacher", exp.teacher), ("student", exp.student)):
        context = model_context_length(model)
        if context is None:
            continue
        for i, spec, bench in benches:
            needed = bench.max_new_tokens
            if needed >= context:
                out.append(f"benchmarks.{i} ({spec.name}).max_new_tokens: {needed} but the {who} ({model.model}) "
                           f"has a context of {context} tokens; set max_new_tokens below {context} minus the "
                           f"prompt")
        if exp.sampling.max_new_tokens + exp.budget.max_prompt_length > context and who == exp.sampling.sampler:
            out.append(f"sampling.max_new_tokens ({exp.sampling.max_new_tokens}) + budget.max_prompt_length "
                       f"({exp.budget.max_prompt_length}) exceed the {who}'s context of {context} tokens")
    return out


def _subsets(benches: Benches) -> list[str]:
    out = []
    for i, spec, _ in benches:
        if spec.subset is None:
            continue
        try:
            available = len(benchmark_from_spec(spec, subset=None).load().items)
        except DataSourceError as exc:
            if not spec.optional:
                out.append(f"benchmarks.{i} ({spec.name}): its data cannot be loaded: {str(exc).splitlines()[0]}")
            continue
        if spec.subset > available:
            out.append(f"benchmarks.{i} ({spec.name}).subset: {spec.subset} but the data has {available} items; "
                       f"use at most {available} (or no subset for all of them)")
    return out


def model_context_length(spec: ModelSpec) -> int | None:
    """The model's context in tokens from its config (no weights loaded); None when no config is at hand
    (e.g. a hub model not yet in the local cache, offline)."""
    from harness.models import sources

    kind = sources._source_kind(spec.model)
    if kind == "tiny":
        from harness.models.tiny import TINY_CONTEXT

        return TINY_CONTEXT
    try:
        if kind == "alias":
            directory: Path | None = sources.smollm_cache_dir()
        elif kind == "local":
            directory = Path(spec.model).expanduser()
        else:
            directory = sources.hf_config_dir(spec.model, spec.revision)
    except HarnessError:
        return None
    config = (directory / "config.json") if directory else None
    if config is None or not config.is_file():
        return None
    data = json.loads(config.read_text())
    data = data.get("text_config", data)  # multimodal configs nest the language model's
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(data.get(key), int):
            return int(data[key])
    return None
