"""What would fail hours later, found before any work: `pad-harness validate` and the start of every run.

Each check returns the problems it finds as one-line messages that say what to do; `preflight` runs them
all (it does not stop at the first) and raises one `ConfigError` listing every problem:
- generation backends that are not registered (`generation_backend`, `sampling.backend`);
- judges that cannot run: a missing API key for the judge of any benchmark that needs one;
- answer lengths beyond a model's context (`benchmarks[].max_new_tokens`, resolved to the benchmark's
  default, plus the longest prompt the budget allows), checked against each answering model's config, and
  MCQ prompts (two sampled responses and the question) beyond the teacher's;
- what each benchmark checks itself (`Benchmark.preflight`, e.g. MT-Bench's GPT-4 reference answers);
- benchmark subsets larger than their data; a local prompt source (`sharegpt`, `jsonl:`) that cannot be read
  or has fewer usable prompts than `prompts.count`;
- `output_dir` placeholders other than `{name}`, or an `output_dir` that is a file;
- quantized models that cannot load here (nf4 on CPUs, a missing package), or that a backend loading the
  weights itself (vLLM) would serve unquantized under their quantized identity.
One problem is one line (`FILE: problem`); several are listed one per line under a count.
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
    from harness.tuning import validate_tuning

    validate_tuning(exp, source)  # the search and its dev split, each problem one line
    benches = [(i, spec, benchmark_from_spec(spec)) for i, spec in enumerate(exp.benchmarks)]
    own = _benchmark_checks(benches)
    problems = (_backends(exp) + _output_dir(exp) + _judges(exp, benches) + _contexts(exp, benches) + own
                + _subsets([b for b in benches if not any(p.startswith(f"benchmarks.{b[0]} ") for p in own)], exp)
                + _prompts(exp) + _external_answers(exp) + _quantization(exp))
    if len(problems) == 1:
        raise ConfigError(f"{source}: {problems[0]}")
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


def _quantization(exp: Experiment) -> list[str]:
    """Each quantized model (harness.models.quantize) checked on the device it will run on, and against the
    backends that serve it: vLLM loads the weights from disk itself, so a model's `quantization:` would not
    apply there while every key named the model quantized."""
    from harness.models.quantize import quantization_problem
    from harness.models.sources import resolve_device

    models = {"teacher": exp.teacher, "student": exp.student,
              **{f"external {e.label!r} model": e.model for e in exp.external if e.model is not None}}
    out = []
    for who, spec in models.items():
        if spec.quantization is None:
            continue
        if problem := quantization_problem(spec, resolve_device(spec)):
            out.append(f"{who}.quantization: {problem}")
        served = ([("sampling.backend", exp.sampling.backend)] if exp.sampling.sampler == who else []) + (
            [("generation_backend", exp.generation_backend)] if exp.benchmarks else [])
        for where, backend in served:
            if _loads_own_weights(backend):
                out.append(f"{who}.quantization: {spec.quantization} is applied where transformers loads the model, "
                           f"but {where} {backend!r} loads the weights itself, unquantized; use the hf backend there, "
                           f"or remove {who}.quantization and set `backends.vllm.quantization` (vLLM's own: fp8, ...)")
    return out


def _loads_own_weights(backend: str) -> bool:
    from harness.registry import BACKENDS

    try:
        return not BACKENDS.get(backend).uses_loaded_weights
    except HarnessError:
        return False  # an unknown backend: `_backends` reports it


def _external_answers(exp: Experiment) -> list[str]:
    """Each external answers file read as the run will read it: the right schema, every item of the
    benchmark (as subset) once, nothing else (the benchmark's own `read_official_answers` says what is wrong,
    naming the file and the first bad record)."""
    specs = {spec.name: spec for spec in exp.benchmarks}
    out = []
    for ext in exp.external:
        for name, file in ext.answers.items():
            where = f"external {ext.label!r} answers.{name}"
            bench = benchmark_from_spec(specs[name])
            if not bench.reads_official_answers():
                out.append(f"{where}: benchmark {name!r} reads no official answers file; evaluate a model instead "
                           f"(external: - label: ..., model: ...)")
            elif not Path(file).is_file():
                out.append(f"{where}: file {file!r} not found (paths are relative to the experiment file)")
            else:
                try:
                    bench.read_official_answers(Path(file), bench.load())
                except HarnessError as exc:
                    out.append(f"{where}: {exc}")
    return out


def _output_dir(exp: Experiment) -> list[str]:
    fields = {f for _, f, _, _ in string.Formatter().parse(exp.output_dir) if f is not None}
    unknown = sorted(fields - {"name"})
    if unknown:
        return [f"output_dir {exp.output_dir!r}: unknown placeholder(s) {unknown}; the only one is {{name}}"]
    path = exp.run_dir()
    if path.exists() and not path.is_dir():
        return [f"output_dir {str(path)!r} is a file, not a directory; name a directory (it is created if missing)"]
    return []


def _prompts(exp: Experiment) -> list[str]:
    """Local prompt sources are read here (a fraction of a second); a hub dataset is fetched when the run
    needs it."""
    if exp.prompts.source.startswith("hf:"):
        return []
    from harness.prompts import load_prompts

    try:
        load_prompts(exp.prompts)
    except DataSourceError as exc:
        return [f"prompts: {exc}"]
    return []


Benches = list[tuple[int, Any, Benchmark]]  # (index, BenchmarkSpec, the benchmark it builds)


def _judges(exp: Experiment, benches: Benches) -> list[str]:
    from harness.judges.choice import judge_spec_for
    from harness.registry import JUDGES

    where: dict[str, list[str]] = {}  # problem -> the benchmarks it stops: one line per problem
    for i, spec, bench in benches:
        if not bench.needs_judge:
            continue
        try:
            judge = judge_spec_for(exp.judge, spec, bench)
            cls: Any = JUDGES.get(judge.backend)
        except HarnessError as exc:
            where.setdefault(str(exc), []).append(f"benchmarks.{i} ({spec.name})")
            continue
        problem = cls.preflight(judge)
        if problem:
            where.setdefault(problem, []).append(f"benchmarks.{i} ({spec.name})")
    return [f"{', '.join(benchmarks)} judge: {problem}" for problem, benchmarks in where.items()]


def _contexts(exp: Experiment, benches: Benches) -> list[str]:
    """Lengths each model must hold: benchmark answers (both models answer), samples (the sampler) and
    training/scoring sequences of `budget.max_length` (both: the student trains, the teacher scores)."""
    models = {"teacher": exp.teacher, "student": exp.student}
    contexts = {who: context for who, model in models.items()
                if (context := model_context_length(model)) is not None}

    def too_small(needed: int, whom: tuple[str, ...]) -> tuple[str, int] | None:
        over = [who for who in whom if who in contexts and needed > contexts[who]]
        if not over:
            return None
        ids = ", ".join(sorted({models[who].model for who in over}))
        verb = "has" if len(over) == 1 else "have"
        context = min(contexts[who] for who in over)
        return f"the {' and the '.join(over)} ({ids}) {verb} a context of {context} tokens", context

    out = []
    for i, spec, bench in benches:
        if found := too_small(bench.max_new_tokens + 1, ("teacher", "student")):  # + at least one prompt token
            what, context = found
            out.append(f"benchmarks.{i} ({spec.name}).max_new_tokens: {bench.max_new_tokens} but {what}; set "
                       f"max_new_tokens below {context} minus the prompt")
    sampled = exp.sampling.max_new_tokens + exp.budget.max_prompt_length
    if found := too_small(sampled, (exp.sampling.sampler,)):
        out.append(f"sampling.max_new_tokens ({exp.sampling.max_new_tokens}) + budget.max_prompt_length "
                   f"({exp.budget.max_prompt_length}) = {sampled} but {found[0]}; lower sampling.max_new_tokens")
    if found := too_small(exp.budget.max_length, ("teacher", "student")):
        out.append(f"budget.max_length ({exp.budget.max_length}) but {found[0]}; lower budget.max_length")
    samples_fit = not any(problem.startswith("sampling.max_new_tokens") for problem in out)  # else said once
    return out + (_mcq_context(exp, contexts.get("teacher")) if samples_fit else [])


def _mcq_context(exp: Experiment, context: int | None) -> list[str]:
    """An MCQ prompt holds two sampled responses and the question: when two responses of
    `sampling.max_new_tokens` (the released rule cuts each at 2,500 tokens) and a prompt of
    `budget.max_prompt_length` cannot fit the teacher's context, long samples would be scored past it (counted
    in the sampler's tokens, about the teacher's; the signal refuses an actual prompt that does not fit)."""
    from harness.methods.base import Signal
    from harness.registry import METHODS
    from harness.signals import RELEASED_MCQ_RESPONSE_TOKENS

    if context is None:
        return []
    try:
        needed = any(Signal.MCQ_PREFERENCE in METHODS.get(spec.name)(spec.params).signals_needed()
                     for spec in exp.methods)
    except Exception:
        return []  # an unknown method or bad params: reported when the run builds its methods
    released = exp.signals.mcq == "released"
    sampled = exp.sampling.max_new_tokens
    response = min(sampled, RELEASED_MCQ_RESPONSE_TOKENS) if released else sampled
    longest = 2 * response + exp.budget.max_prompt_length
    if not needed or longest <= context:
        return []
    cut = f"cut at {RELEASED_MCQ_RESPONSE_TOKENS} as released from " if response < sampled else ""
    return [f"signals.mcq: an MCQ prompt holds two responses of up to {response} tokens ({cut}sampling.max_new_tokens "
            f"{sampled}) and the question (budget.max_prompt_length {exp.budget.max_prompt_length}): {longest} tokens, "
            f"beyond the teacher's ({exp.teacher.model}) context of {context}; lower sampling.max_new_tokens or "
            f"budget.max_prompt_length"]


def _benchmark_checks(benches: Benches) -> list[str]:
    """Each benchmark's own check (`Benchmark.preflight`); an optional benchmark is skipped at run time instead."""
    return [f"benchmarks.{i} ({spec.name}): {problem}" for i, spec, bench in benches
            if not spec.optional and (problem := bench.preflight())]


def _subsets(benches: Benches, exp: Experiment) -> list[str]:
    out = []
    for i, spec, bench in benches:
        if spec.subset is None:
            continue
        try:
            if bench.uses_run:  # its items are the prompt source's held-out prompts (teacher_agreement)
                from harness.prompts import load_held_out

                load_held_out(exp.prompts, spec.subset)
                continue
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
