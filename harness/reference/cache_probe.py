"""Which keys enter a cache key, found by asking the code: change the key, plan, see which artifact keys move.

A stage's key is a hash of its `inputs()` (harness.stages), which read the experiment through
`Budget.result_inputs`, the models' identities (`model_fingerprint`), the judges' `judge_key` and the
backends' `backend_key`, each leaving out what does not change a result. Rather than restate those rules
here (they would drift), the probe plans a small reference experiment (tiny models on the CPU: no weights
load, nothing runs), changes one key to another valid value, plans again, and records the stages whose
keys moved. The same change is checked against the experiment hash that decides whether two runs may
share one leaderboard (harness.stages.comparable).

A key is probed in a context where it is used (a judge's params with that judge as the backend, a method's
params with that method trained, ...). What the probe cannot try here (a hub revision, a file the
reference does not have) is said in `NOT_PROBED`, and the reference test fails when a key is neither
probed nor explained there.
"""

from __future__ import annotations

import copy
import tempfile
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from harness.reference.schema import Key, Plugin, default_of, literal_choices, nested_model

VALUES_TRIED = 3  # valid values tried per key; what any of them moves is what the key moves
MODEL = {"model": "tiny:llama", "device": "cpu"}  # `device: cpu`: the same identities on every machine
REFERENCE: dict[str, Any] = {
    "name": "reference",
    "teacher": {**MODEL, "seed": 1, "system_prompt": "Be brief."},
    "student": {**MODEL, "seed": 0},
    "prompts": {"count": 2},
    "sampling": {"candidates": 3, "n": 2, "max_new_tokens": 4},
    "methods": [],  # every built-in method: added by `reference_experiment`
    "budget": {"max_steps": 1, "effective_batch": 2, "micro_batch": 1, "max_length": 64, "max_prompt_length": 32},
    "benchmarks": [],  # every built-in benchmark
    "judge": {"backend": "local", "model": "tiny:llama"},
}
# What a plugin needs to be named at all (a required parameter).
REQUIRED_PARAMS: dict[str, dict[str, Any]] = {"lm_eval": {"task": "arc_easy"}}

# Values to try where a key's type gives none that is valid here (the first that plans is used).
PROBE_VALUES: dict[str, list[Any]] = {
    "teacher.model": ["tiny:gpt2"],
    "student.model": ["tiny:gpt2"],
    "external[].model.model": ["tiny:gpt2"],
    "teacher.tokenizer": ["tiny:gpt2"],
    "student.tokenizer": ["tiny:gpt2"],
    "teacher.device": ["cuda"],
    "student.device": ["cuda"],
    "external[].model": [{**MODEL, "seed": 4}],
    "external[].model.tokenizer": ["tiny:gpt2"],
    "external[].model.device": ["cuda"],
    "methods[name=gkd].params.responses": ["first"],
    "benchmarks[name=lm_eval].params.data_files": [{"test": "reference-test.jsonl"}],
    "sampling.backend": ["vllm"],
    "generation_backend": ["vllm"],
    "judge.backend": ["openai"],
    "judge.model": ["tiny:gpt2"],
    "benchmarks[].judge.backend": ["openai"],
    "benchmarks[].name": ["ifeval"],
    "methods[].name": ["sft"],
    "methods[].search": [{"optimizer.learning_rate": [1e-4, 2e-4]}],
    "tuning.select_on.benchmark": ["ifeval"],
    "tuning.select_on.metric": ["top1"],
    "signals.mcq_template": ["default"],
    "prompts.source": ["jsonl:reference-prompts.jsonl"],
    "prompts.field": ["text"],
    "output_dir": ["elsewhere/{name}"],
    "data_parallel.chunk": [7],
}

REFUSED = "refused:"  # a note saying the schema refuses the key (and so every key beneath it) in that place
# Keys the probe cannot change to a value that plans here, with what the code does with them.
NOT_PROBED: dict[str, str] = {
    "teacher.revision": "model identity: a hub model's revision enters as the commit it resolves to",
    "student.revision": "model identity: a hub model's revision enters as the commit it resolves to",
    "teacher.lora": "refused: adapters are trained on the student only",
    "tuning": "a method's `search:` needs it; its keys say what enters the trials' keys",
    "methods[].params": "each parameter is a key of its method's own (below)",
    "benchmarks[].params": "each parameter is a key of its benchmark's own (below)",
    "judge.params": "each parameter is a key of its judge backend's own (below)",
    "benchmarks[].judge.params": "each parameter is a key of its judge backend's own (below)",
    "backends": "each parameter is a key of its backend's own (below)",
    "tuning.select_on.benchmark": "the benchmark whose dev answers the trials are scored on (only `teacher_agreement` "
                                  "has a dev split among the built-ins)",
    "benchmarks[name=arena_hard].params.style_control_pool": "a folder of judgement files: as every benchmark "
                                                             "parameter, part of the benchmark's answers key",
    "teacher.quantization": "model identity (`quantization`, with the library that quantizes)",
    "student.quantization": "model identity (`quantization`, with the library that quantizes); needs `lora`",
    "external[].answers": "the answers file's content digest enters its imported answers' key",
    "external[].model.lora": "refused: an external row is not trained here",
    "external[].model.system_prompt": "refused: an external row answers without a context",
    "external[].model.demonstrations": "refused: an external row answers without a context",
    "external[].model.quantization": "model identity (`quantization`, with the library that quantizes)",
    "external[].model.revision": "model identity: a hub model's revision enters as the commit it resolves to",
    "student.offload": "refused: only the teacher waits in host memory",
    "logging.mlflow_tracking_uri": "tracking only (no stage reads it)",
    "benchmarks[name=mt_bench].params.reference_model": "one value allowed (FastChat's GPT-4 references); as every "
                                                        "benchmark parameter, part of the benchmark's answers key",
}


@dataclass(frozen=True)
class Probe:
    """What changing a key moved: the stages whose artifact keys moved, in plan order (empty: none), and
    whether the experiment hash that merging runs compares moved; `note` when it could not be tried."""

    stages: tuple[str, ...] = ()
    merge: bool = False
    note: str = ""
    tried: bool = True


def reference_experiment(plugins: list[Plugin]) -> dict[str, Any]:
    data = copy.deepcopy(REFERENCE)
    data["methods"] = [{"name": p.name} for p in plugins if p.kind == "METHODS"]
    data["benchmarks"] = [{"name": p.name, "subset": 1, "params": dict(REQUIRED_PARAMS.get(p.name, {}))}
                          for p in plugins if p.kind == "BENCHMARKS"]
    return data


class Prober:
    """Plans the reference experiment and its one-key variants (plans are cached per variant)."""

    def __init__(self, plugins: list[Plugin]) -> None:
        self.base = reference_experiment(plugins)
        self._tmp = tempfile.TemporaryDirectory(prefix="pad-harness-reference-")
        self._plans: dict[str, tuple[dict[str, str], str] | None] = {}

    def close(self) -> None:
        self._tmp.cleanup()

    # ------------------------------------------------------------------ planning
    def keys_of(self, data: dict[str, Any]) -> tuple[dict[str, str], str] | None:
        """(`stage:label` -> key, experiment hash) of a variant; None when it is not a valid experiment."""
        import json

        cache_key = json.dumps(data, sort_keys=True, default=str)
        if cache_key not in self._plans:
            self._plans[cache_key] = self._plan(data)
        return self._plans[cache_key]

    def _plan(self, data: dict[str, Any]) -> tuple[dict[str, str], str] | None:
        from harness.config import parse_experiment
        from harness.errors import HarnessError
        from harness.pipeline import Pipeline
        from harness.stages.comparable import experiment_hash

        try:
            exp = parse_experiment(data, "<reference>")
            steps = Pipeline(exp, Path(self._tmp.name) / "run", progress=False).plan()
            return {f"{s.stage}:{s.label}": s.artifact.key for s in steps}, experiment_hash(exp)
        except (HarnessError, ValueError, TypeError, KeyError):
            return None

    # ------------------------------------------------------------------ probing
    def probe(self, context: dict[str, Any], path: list[str | int], key: Key, probe_id: str) -> Probe:
        """Change the key at `path` of `context` to each candidate value until one plans. `probe_id`: the
        key's path in the page (`PROBE_VALUES`, `NOT_PROBED`)."""
        before = self.keys_of(context)
        if before is None:
            raise AssertionError(f"the reference context of {key.path} does not plan")
        note = explained(probe_id)
        if note is not None:
            return Probe(note=note, tried=False)
        current = get_path(context, path)
        if current is None:
            current = default_of(key.info)
        # Several values: one may resolve to the same thing here (`dtype: float32` is what `auto` is on a CPU).
        moved: list[str] = []
        merge, tried = False, 0
        for value in candidates(probe_id, key.info, current):
            variant = copy.deepcopy(context)
            set_path(variant, path, value)
            after = self.keys_of(variant)
            if after is None:
                continue
            moved += moved_stages(before[0], after[0])
            merge = merge or before[1] != after[1]
            tried += 1
            if tried == VALUES_TRIED:
                break
        if not tried:
            return Probe(note="", tried=False)
        order = {stage: i for i, stage in enumerate(dict.fromkeys(s.split(":", 1)[0] for s in before[0]))}
        return Probe(tuple(sorted(set(moved), key=lambda stage: order.get(stage, len(order)))), merge)


def moved_stages(before: dict[str, str], after: dict[str, str]) -> tuple[str, ...]:
    """The stages (in plan order) whose set of artifact keys differs: a renamed row whose keys stay is no
    move, a step added or dropped is."""
    def by_stage(steps: dict[str, str]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for step, key in steps.items():
            out.setdefault(step.split(":", 1)[0], set()).add(key)
        return out

    old, new = by_stage(before), by_stage(after)
    return tuple(stage for stage in dict.fromkeys([*old, *new]) if old.get(stage) != new.get(stage))


def explained(probe_id: str) -> str | None:
    """The `NOT_PROBED` note of a key, or of a refused key holding it (a refused `lora` refuses its keys)."""
    if probe_id in NOT_PROBED:
        return NOT_PROBED[probe_id]
    parts = probe_id.split(".")
    for end in range(len(parts) - 1, 0, -1):
        holder = ".".join(parts[:end])
        note = NOT_PROBED.get(holder, NOT_PROBED.get(holder.removesuffix("[]")))
        if note is not None and note.startswith(REFUSED):
            return note
    return None


# ---------------------------------------------------------------------------------------------- values
def candidates(path: str, info: FieldInfo, current: Any) -> list[Any]:
    """Other valid-looking values for a key, the hand-picked ones first."""
    out = list(PROBE_VALUES.get(path, []))
    annotation = info.annotation
    choices = literal_choices(annotation)
    if choices:
        out += [c for c in choices if c != current]
    inner = nested_model(annotation)
    if inner is not None and current is None:
        out.append({})
    base_types = _base_types(annotation)
    if bool in base_types:
        out.append(not current if current is not None else True)
    if int in base_types and bool not in base_types:
        n = current if isinstance(current, int) else 0
        out += [n + 1, n * 2, n - 1, 1, 2, 8, 64, 1024]
    if float in base_types:
        x = float(current) if isinstance(current, (int, float)) else 0.0
        out += [x * 2 if x else 0.5, x / 2 if x else 0.25, x + 0.5, 0.5, 1.0, 1e-3]
    if str in base_types:
        out += [f"{current}-probe" if current else "probe", "x"]
    if tuple in base_types or list in base_types:
        args = [a for a in typing.get_args(annotation) if typing.get_origin(a) in (tuple, list)] or [annotation]
        element = (typing.get_args(args[0]) or (str,))[0]
        if element is int:
            out.append([*(current or ()), max(current or (0,)) + 1])
        elif isinstance(element, type) and issubclass(element, BaseModel):
            out.append([{"user": "Hi.", "assistant": "Hello."}])
        else:
            out.append([*(current or ()), "probe"])
    return [v for v in out if v != current]


def _base_types(annotation: Any) -> set[Any]:
    origin = typing.get_origin(annotation)
    if origin is None:
        return {annotation}
    if origin in (tuple, list, dict):
        return {origin}
    found: set[Any] = set()
    for arg in typing.get_args(annotation):
        found |= _base_types(arg)
    return found


# ---------------------------------------------------------------------------------------------- paths
def get_path(data: Any, path: list[str | int]) -> Any:
    for part in path:
        if isinstance(part, int):
            data = data[part] if isinstance(data, list) and len(data) > part else None
        else:
            data = data.get(part) if isinstance(data, dict) else None
        if data is None:
            return None
    return data


def set_path(data: Any, path: list[str | int], value: Any) -> None:
    """Set the value at `path`, making the mappings and list entries on the way that are missing."""
    for part, following in zip(path[:-1], path[1:], strict=True):
        if isinstance(part, int):
            while len(data) <= part:
                data.append({})
            data = data[part]
        else:
            data = data.setdefault(part, [] if isinstance(following, int) else {})
    data[path[-1]] = value


SetUp = Callable[[dict[str, Any]], None]


def _with_tuning(data: dict[str, Any]) -> None:
    data["tuning"] = {"trials": 1}
    data["methods"][0]["search"] = {"optimizer.learning_rate": [1e-4, 2e-4]}


# Contexts a key is used in, by the start of its path (the longest match wins).
CONTEXTS: dict[str, SetUp] = {
    "teacher.demonstrations[]": lambda d: d["teacher"].update(demonstrations=[{"user": "Hi.", "assistant": "Hello."}]),
    "student.demonstrations[]": lambda d: d["student"].update(demonstrations=[{"user": "Hi.", "assistant": "Hello."}]),
    "student.lora.": lambda d: d["student"].update(lora={}),
    "external": lambda d: d.update(external=[{"label": "elsewhere", "model": {**MODEL, "seed": 3}}]),
    "tuning.": _with_tuning,
    "methods[].search": lambda d: d.update(tuning={"trials": 1}),
    "methods[].name": lambda d: d["methods"][0].update(label="first"),
    "benchmarks[].judge.": lambda d: d["benchmarks"][0].update(judge={"backend": "local", "model": "tiny:llama"}),
}


def schema_context(base: dict[str, Any], key_path: str) -> tuple[dict[str, Any], list[str | int]]:
    """The reference experiment set up for `key_path`, and the key's place in it."""
    data = copy.deepcopy(base)
    prefixes = sorted((p for p in CONTEXTS if key_path.startswith(p)),
                      key=len, reverse=True)
    if prefixes:
        CONTEXTS[prefixes[0]](data)
    path: list[str | int] = []
    for part in key_path.split("."):
        if part.endswith("[]"):
            path += [part[:-2], 0]
        else:
            path.append(part)
    return data, path


def plugin_context(base: dict[str, Any], plugin: Plugin, field: str) -> tuple[dict[str, Any], list[str | int]]:
    """The reference experiment using `plugin`, and where its parameter `field` goes."""
    data = copy.deepcopy(base)
    if plugin.kind == "METHODS":
        index = next(i for i, m in enumerate(data["methods"]) if m["name"] == plugin.name)
        return data, ["methods", index, "params", field]
    if plugin.kind == "BENCHMARKS":
        index = next(i for i, b in enumerate(data["benchmarks"]) if b["name"] == plugin.name)
        return data, ["benchmarks", index, "params", field]
    if plugin.kind == "JUDGES":
        data["judge"] = {**data["judge"], "backend": plugin.name}
        return data, ["judge", "params", field]
    if plugin.kind == "BACKENDS":
        data["generation_backend"] = plugin.name
        data["sampling"] = {**data["sampling"], "backend": plugin.name}
        return data, ["backends", plugin.name, field]
    raise ValueError(f"{plugin.kind} plugins take no parameters in the experiment file")


def probe_all(experiment: list[Key], plugins: list[Plugin]) -> dict[str, Probe]:
    """`Key.path` (schema keys) or `Plugin.where` + `.` + path (plugin params) -> what changing it moved.
    A key holding a schema class with a default instance is not probed itself: its keys are."""
    prober = Prober(plugins)
    out: dict[str, Probe] = {}
    try:
        for key in experiment:
            inner = nested_model(key.info.annotation)
            if inner is not None and default_of(key.info) is not None or key.info.is_required() and inner:
                continue
            context, path = schema_context(prober.base, key.path)
            out[key.path] = prober.probe(context, path, key, key.path)
        for plugin in plugins:
            for key in plugin.keys():
                context, path = plugin_context(prober.base, plugin, key.path)
                probe_id = f"{plugin.where}.{key.path}"
                out[probe_id] = prober.probe(context, path, key, probe_id)
    finally:
        prober.close()
    return out
