"""Each stage of a plan priced in device memory (harness.estimate.memory), and what would make it fit.

Which models a stage finds on the device follows the model pool (harness.models.pool): the teacher and
the student, once a stage has loaded them, stay on their device for the rest of the run, except a model
marked `offload` (parked in host memory while another model's weights are in use) and except while a vLLM
engine runs (the pool parks what it holds first). A train stage loads the student (the copy it trains is a
second one); scoring the teacher loads the student too (its cut of the responses). On a CPU there is
nothing to park: host memory is the device.

Lengths are the longest a micro-batch can hold (its sequences are padded to its longest): the longest
training prompt cut to `budget.max_prompt_length` (that cap when a hub prompt set is not read), responses
at their cap (`sampling.max_new_tokens`), both within `budget.max_length` by the budget's truncation rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from harness.estimate.memory import (
    DTYPE_BYTES,
    Memory,
    TrainingInputs,
    hf_generation_parts,
    inference_activations,
    kv_cache_bytes,
    logits_bytes,
    scoring_parts,
    training_parts,
    vllm_parts,
    weight_bytes,
)
from harness.estimate.shapes import ModelShape
from harness.estimate.work import Shapes, train_sequences

SHARD_COUNTS = (2, 4, 8)  # GPUs a lever may shard training (FSDP / ZeRO-3) or a vLLM engine (tensor parallel) over
TEACHER_SOURCES = {"teacher_logprobs", "teacher_topk", "mcq_preference"}
SCORING_SOURCES = TEACHER_SOURCES | {"student_logprobs"}


@dataclass(frozen=True)
class Setup:
    """What decides a stage's memory besides shapes and lengths; each lever changes one field."""

    on_gpu: bool
    micro_batch: int
    effective_batch: int
    checkpointing: bool
    mixed_precision: str
    lora: Any | None
    student_quantization: str | None
    teacher_quantization: str | None
    teacher_offload: bool
    signals_batch: int
    generation_batch: int
    max_length: int = 0  # budget.max_length / max_prompt_length (0: the experiment's)
    max_prompt_length: int = 0
    train_shards: int = 1  # FSDP / ZeRO-3 processes
    tensor_parallel: int = 1  # vLLM
    gpu_memory_utilization: float = 0.85
    max_model_len: int | None = None

    @classmethod
    def of(cls, exp: Any, on_gpu: bool, train_shards: int = 1) -> Setup:
        from harness.models.vllm_generator import VLLMParams

        vllm = VLLMParams.model_validate(exp.backends.get("vllm", {}))  # its defaults are the engine's
        return cls(on_gpu, exp.budget.micro_batch, exp.budget.effective_batch, exp.budget.gradient_checkpointing,
                   exp.budget.mixed_precision, exp.student.lora, exp.student.quantization, exp.teacher.quantization,
                   exp.teacher.offload, exp.signals.batch_size, exp.sampling.batch_size, exp.budget.max_length,
                   exp.budget.max_prompt_length, train_shards, vllm.tensor_parallel_size,
                   vllm.gpu_memory_utilization, vllm.max_model_len)

    def dtype_bytes(self, spec: Any) -> int:
        """harness.models.sources.resolve_dtype: fp32 on a CPU, bf16 on an accelerator, unless the spec says."""
        return DTYPE_BYTES[spec.dtype] if spec.dtype != "auto" else (2 if self.on_gpu else 4)

    def autocast16(self, load_bytes: int) -> bool:
        """harness.training.precision.resolve_mixed_precision: `auto` is bf16 on a GPU or for a 16-bit student."""
        if self.mixed_precision == "auto":
            return self.on_gpu or load_bytes == 2
        return self.mixed_precision != "no"


@dataclass
class StageMemory:
    memory: Memory
    capacity: float
    levers: list[tuple[str, float]] = field(default_factory=list)  # (what to set, the stage's new peak)

    @property
    def fits(self) -> bool:
        return self.memory.fits(self.capacity)

    @property
    def limit(self) -> float:
        """What the parts must fit in: the device, or a vLLM engine's share of it."""
        return self.memory.share if self.memory.share is not None else self.capacity


class MemoryPlan:
    """Prices the steps of one plan in order (what a stage finds on the device depends on what ran before)."""

    def __init__(self, shapes: Shapes, setup: Setup, capacity: float) -> None:
        self.s, self.setup, self.capacity = shapes, setup, capacity
        self.loaded: set[str] = set()  # "teacher", "student": held by the pool from now on

    def stage(self, step: Any) -> StageMemory | None:
        """The step's peak (None for stages without model work) and, if it does not fit, the levers."""
        if step.kind in ("prompts", "trainset", "judgements") or getattr(step, "file", None) is not None:
            return None  # no model work (an external row's answers are read from a file)
        if step.kind == "signal" and step.source.name not in SCORING_SOURCES | {"teacher_samples"}:
            return None  # a plugin's signal: its work is not known here (the time estimate says so too)
        before = self.advance(step)
        price = lambda setup: self._memory(step, setup, before)  # noqa: E731
        memory = price(self.setup)
        result = StageMemory(memory, self.capacity)
        if not result.fits:
            result.levers = self._levers(step, price)
        return result

    def advance(self, step: Any) -> set[str]:
        """Note what `step` loads (a step to run); the models held before it."""
        before = set(self.loaded)
        if not step.done and step.kind not in ("prompts", "trainset", "judgements"):
            self.loaded |= self._loads(step)
        return before

    # ------------------------------------------------------------------ what a stage holds
    def _loads(self, step: Any) -> set[str]:
        exp = self.s.exp
        if step.kind == "samples":
            return {exp.sampling.sampler} if exp.sampling.backend == "hf" else set()
        if step.kind == "signal":
            name = step.source.name
            if name in TEACHER_SOURCES:
                return {"teacher", "student"}
            if name == "teacher_samples":
                return {"teacher"} if exp.sampling.backend == "hf" else set()
            return {"student"}
        if step.kind == "train":
            return {"student", "teacher"} if step.spec.name == "gkd" else {"student"}
        if step.kind == "answers":
            return {"teacher" if step.row.kind == "teacher" else "student"}
        return set()

    def _held(self, loaded: set[str], using: set[str], setup: Setup, engine: bool = False) -> list[tuple[str, float]]:
        """Models the pool keeps on the device beside what the stage itself uses."""
        if not setup.on_gpu:
            engine = False  # host memory is the device: nothing is parked
        held = []
        for who in sorted(loaded - using):
            if engine or (who == "teacher" and setup.teacher_offload and setup.on_gpu):
                continue
            held.append((f"{who} held by the model pool", self._weights(who, setup)))
        return held

    def _weights(self, who: str, setup: Setup) -> float:
        spec = self.s.exp.teacher if who == "teacher" else self.s.exp.student
        quant = setup.teacher_quantization if who == "teacher" else setup.student_quantization
        return weight_bytes(self.s.shape(who), setup.dtype_bytes(spec), quant)

    # ------------------------------------------------------------------ lengths
    def _prompt(self, who: str) -> float:
        longest = self.s.lengths.longest_prompt_tokens(who)
        if longest is not None:
            return longest
        extra = self.s.prompt["teacher"] - self.s.prompt["student"] if who == "teacher" else 0.0
        return self.s.exp.budget.max_prompt_length + max(extra, 0.0)  # a hub set: the student's cap

    def _trained_lengths(self, response_cap: float, setup: Setup) -> tuple[float, float]:
        """(prompt, response) of the longest pair training and scoring cut (harness.methods.common.fit_group)."""
        budget = self.s.exp.budget
        max_length, max_prompt = setup.max_length or budget.max_length, setup.max_prompt_length or budget.max_prompt_length
        full = self._prompt("student")
        response = response_cap + self.s.lengths.student.turn_end
        if budget.truncation == "group_as_released":
            prompt = full
            if full + response > max_length:
                prompt = min(full, max_prompt)
                response = min(response, max_length - max_prompt)
            return prompt, response
        prompt = min(full, max_prompt)
        return prompt, min(response, max_length - prompt)

    # ------------------------------------------------------------------ per kind
    def _memory(self, step: Any, setup: Setup, loaded: set[str]) -> Memory:
        if step.kind == "train":
            return self._train(step, setup, loaded)
        if step.kind == "signal" and step.source.name != "teacher_samples":
            return self._scoring(step.source.name, setup, loaded)
        exp = self.s.exp
        if step.kind == "answers":
            who = "teacher" if step.row.kind == "teacher" else "student"
            bench = step.benchmark()
            tokens = self.s.lengths.teacher if who == "teacher" else self.s.lengths.student
            prompt = self.s.lengths.item_prompt(tokens, self.s.lengths.bench_items(bench, step.bench_spec))
            return self._generation(who, exp.generation_backend, prompt, bench.max_new_tokens, setup, loaded,
                                    trained=who == "student" and step.row.kind != "student")
        who = "teacher" if step.kind == "signal" else exp.sampling.sampler
        return self._generation(who, exp.sampling.backend, self._prompt(who), exp.sampling.max_new_tokens, setup,
                                loaded)

    def _train(self, step: Any, setup: Setup, loaded: set[str]) -> Memory:
        exp, student = self.s.exp, self.s.student
        k, shareable, _ = train_sequences(step.spec.name, step.method.params, exp.sampling.n)
        prompt, response = self._trained_lengths(exp.sampling.max_new_tokens, setup)
        if shareable and student.shares_prompts:
            rows, width = setup.micro_batch, prompt + k * response + (k - 1)
        else:
            rows, width = setup.micro_batch * k, prompt + response
        load = setup.dtype_bytes(exp.student)
        t = TrainingInputs(rows, width, load, setup.autocast16(load), setup.checkpointing, setup.lora,
                           setup.student_quantization, setup.train_shards)
        parts = training_parts(student, t)
        using = {"student"}
        if step.spec.name == "gkd":
            using.add("teacher")
            parts += self._gkd(step, setup, prompt)
        return Memory(tuple(parts + self._held(loaded, using, setup)))

    def _gkd(self, step: Any, setup: Setup, prompt: float) -> list[tuple[str, float]]:
        """GKD's online work: the teacher's weights and no-grad forward, the on-policy generation."""
        exp, teacher = self.s.exp, self.s.teacher
        new = float(step.method.params.max_new_tokens)
        t_bytes = setup.dtype_bytes(exp.teacher)
        act = 2 if t_bytes == 2 or setup.teacher_quantization else 4
        t_width = self._prompt("teacher") + new + 1
        parts = [("teacher (online)", self._weights("teacher", setup)),
                 ("teacher forward (no grad)", inference_activations(teacher, setup.micro_batch * t_width, t_width,
                                                                     act)),
                 ("teacher logits", logits_bytes(teacher, setup.micro_batch * t_width, False) * 8 / 12)]
        if exp.sampling.backend == "vllm" and setup.on_gpu:
            parts.append(("vLLM engine for on-policy samples (gpu_memory_utilization x capacity)",
                          setup.gpu_memory_utilization * self.capacity))
        else:
            load = setup.dtype_bytes(exp.student)
            parts.append(("on-policy generation KV cache",
                          kv_cache_bytes(self.s.student, setup.micro_batch * (prompt + new), 2 if load == 2 else 4)))
        return parts

    def _scoring(self, source: str, setup: Setup, loaded: set[str]) -> Memory:
        exp = self.s.exp
        who = "student" if source == "student_logprobs" else "teacher"
        spec = exp.teacher if who == "teacher" else exp.student
        quant = setup.teacher_quantization if who == "teacher" else setup.student_quantization
        prompt_s, response = self._trained_lengths(exp.sampling.max_new_tokens, setup)
        prompt = self._prompt("teacher") if who == "teacher" else prompt_s
        if source == "mcq_preference":
            response = 2 * response + 200  # a pair: both responses and the template's tail (~200 tokens)
        parts = scoring_parts(who, self.s.shape(who), setup.dtype_bytes(spec), quant, setup.signals_batch, prompt,
                              response, all_logits=source != "mcq_preference")
        return Memory(tuple(parts + self._held(loaded, {who}, setup)))

    def _generation(self, who: str, backend: str, prompt: float, new_tokens: float, setup: Setup,
                    loaded: set[str], trained: bool = False) -> Memory:
        exp = self.s.exp
        spec = exp.teacher if who == "teacher" else exp.student
        shape: ModelShape = self.s.shape(who)
        label = "trained student" if trained else who
        if backend == "vllm" and setup.on_gpu:
            length = setup.max_model_len or shape.context or prompt + new_tokens
            parts = vllm_parts(label, shape, setup.dtype_bytes(spec), length, setup.tensor_parallel)
            return Memory(tuple(parts), share=setup.gpu_memory_utilization * self.capacity)
        quant = None if trained else (setup.teacher_quantization if who == "teacher" else setup.student_quantization)
        parts = hf_generation_parts(label, shape, setup.dtype_bytes(spec), quant, setup.generation_batch, prompt,
                                    new_tokens)
        using = set() if trained else {who}  # a trained row's model is a copy: the base student stays held
        return Memory(tuple(parts + self._held(loaded, using, setup)))

    # ------------------------------------------------------------------ levers
    def _levers(self, step: Any, price: Callable[[Setup], Memory]) -> list[tuple[str, float]]:
        """What would make the stage fit, each with the stage's new peak: only changes that lower it."""
        setup, out = self.setup, []
        base = price(setup).total

        def first_fitting(options: list[tuple[str, Setup]]) -> None:
            priced = [(label, price(s)) for label, s in options]
            fitting = [(label, m) for label, m in priced if m.fits(self.capacity)]
            label, memory = fitting[0] if fitting else priced[-1] if priced else ("", None)  # type: ignore[assignment]
            if memory is not None and (memory.total < base or memory.fits(self.capacity)):
                out.append((label, memory.total))

        if step.kind == "train":
            divisors = [d for d in range(setup.micro_batch - 1, 0, -1) if setup.effective_batch % d == 0]
            first_fitting([(f"--set budget.micro_batch={d}", replace(setup, micro_batch=d)) for d in divisors])
            if not setup.checkpointing:
                first_fitting([("--set budget.gradient_checkpointing=true", replace(setup, checkpointing=True))])
            if setup.lora is None:
                from harness.config import LoraSpec

                first_fitting([("--set student.lora.r=16 (LoRA: another comparison)",
                                replace(setup, lora=LoraSpec(r=16)))])
            elif setup.student_quantization is None and setup.on_gpu:
                first_fitting([("--set student.quantization=nf4 (QLoRA)",
                                replace(setup, student_quantization="nf4"))])
            length, prompt = setup.max_length or self.s.exp.budget.max_length, setup.max_prompt_length
            prompt = prompt or self.s.exp.budget.max_prompt_length
            first_fitting([(f"--set budget.max_length={length // f} --set budget.max_prompt_length={prompt // f} "
                            f"(another budget)", replace(setup, max_length=length // f, max_prompt_length=prompt // f))
                           for f in (2, 4, 8) if prompt // f >= 4 and length // f >= 8])
            if setup.on_gpu and setup.lora is None:
                first_fitting([(f"FSDP / ZeRO-3 over {k} GPUs (configs/accelerate/fsdp.yaml, num_processes: {k})",
                                replace(setup, train_shards=k)) for k in SHARD_COUNTS])
        if step.kind == "signal" and step.source.name != "teacher_samples":
            first_fitting([(f"--set signals.batch_size={b}", replace(setup, signals_batch=b))
                           for b in _halvings(setup.signals_batch)])
        if step.kind in ("samples", "answers") or (step.kind == "signal" and step.source.name == "teacher_samples"):
            first_fitting([(f"--set sampling.batch_size={b}", replace(setup, generation_batch=b))
                           for b in _halvings(setup.generation_batch)])
            if setup.on_gpu and price(setup).share is not None:  # a vLLM engine
                first_fitting([(f"--set backends.vllm.gpu_memory_utilization={u} (a {u * self.capacity / 2**30:.3g} "
                                f"GiB share)",
                                replace(setup, gpu_memory_utilization=u)) for u in (0.9, 0.95)
                               if u > setup.gpu_memory_utilization])
                first_fitting([(f"--set backends.vllm.max_model_len={n}", replace(setup, max_model_len=n))
                               for n in (8192, 4096, 2048) if n < (setup.max_model_len or 1 << 30)])
                first_fitting([(f"--set backends.vllm.tensor_parallel_size={k} ({k} GPUs)",
                                replace(setup, tensor_parallel=k)) for k in SHARD_COUNTS])
        if setup.teacher_quantization is None:
            for q in ("int8", "nf4"):
                first_fitting([(f"--set teacher.quantization={q}", replace(setup, teacher_quantization=q))])
        if setup.on_gpu and not setup.teacher_offload:
            first_fitting([("--set teacher.offload=true", replace(setup, teacher_offload=True))])
        together, what = _combined(setup, [label for label, _ in out])
        if step.kind == "train" and what.count("--set") > 1:
            out.append((f"together: {what}", price(together).total))
        return out


def _halvings(value: int) -> list[int]:
    out = []
    while value > 1:
        value //= 2
        out.append(value)
    return out


_SETUP_FIELDS = {"budget.micro_batch": "micro_batch", "budget.gradient_checkpointing": "checkpointing",
                 "student.lora.r": "lora", "student.quantization": "student_quantization",
                 "teacher.quantization": "teacher_quantization", "teacher.offload": "teacher_offload"}


def _combined(setup: Setup, labels: list[str]) -> tuple[Setup, str]:
    """The setup with every single-GPU lever named in `labels` applied (sharding left out; the teacher at
    the last quantization named), and those settings."""
    from harness.config import LoraSpec

    changes: dict[str, Any] = {}
    chosen: dict[str, str] = {}
    for label in labels:
        setting = label.split(" (")[0]
        key = setting.removeprefix("--set ").split("=")[0]
        field_name = _SETUP_FIELDS.get(key)
        if not setting.startswith("--set ") or field_name is None:
            continue
        value = setting.split("=")[1]
        chosen[key] = setting
        changes[field_name] = (int(value) if key == "budget.micro_batch" else True if value == "true"
                               else LoraSpec(r=int(value)) if key == "student.lora.r" else value)
    return replace(setup, **changes), " ".join(chosen.values())
