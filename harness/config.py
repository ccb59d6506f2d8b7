"""The experiment file: a typed, validated, frozen schema loaded from YAML.

One experiment names a teacher, a student, a prompt source, how to sample, the methods (each with its own
parameters), ONE budget shared by every method, the training seeds, the benchmarks, the judge and the
output directory. Unknown or ill-typed keys fail with one message naming the file, the key and what is
allowed. Method and benchmark parameters are validated by the plugin's own `Params` model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from harness.errors import ConfigError


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class Demonstration(Frozen):
    user: str
    """The user turn of the demonstration."""
    assistant: str
    """The answer the model is shown giving to it."""


class LoraSpec(Frozen):
    """`student.lora`: train low-rank adapters (peft's LoRA) instead of every weight (harness.training.lora).

    The base weights stay frozen in their load dtype; only the adapters (fp32) are trained and held by
    AdamW. The stored student is the merged model (base + B A alpha/r), with the adapter beside it. Part of
    every train key; not of the student's identity (the untrained student and its signals are the base).
    """

    r: int = Field(16, ge=1)
    """Adapter rank."""
    alpha: float = Field(32.0, gt=0)
    """Scale = alpha / r."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter's input while training. Off by default, as every other dropout is in training
    (harness.training.precision): the losses compare log-likelihoods that noise would perturb."""
    target_modules: str | tuple[str, ...] = "all-linear"
    """Which linear layers get adapters: "all-linear" (every linear layer but the output head, as QLoRA does)
    or module names such as [q_proj, v_proj]."""


Quantization = Literal["int8", "nf4"]


class ModelSpec(Frozen):
    """Where a model comes from and the context it sees.

    `model` is a Hugging Face id, a local directory, the alias `smollm2-135m-instruct`, or `tiny:<name>`
    for a random-init model built from a small config (tests). Teacher and student may share weights and
    differ only in context: `system_prompt` and `demonstrations` are prepended to every conversation this
    model sees (context distillation), never to the student's.
    """

    model: str
    """A Hugging Face id, a local directory, the alias `smollm2-135m-instruct`, or `tiny:<name>` (a
    random-init test model)."""
    revision: str | None = None
    """A hub model's branch, tag or commit; the commit it resolves to is part of the model's identity.
    Default: the main branch."""
    tokenizer: str | None = None
    """Another tokenizer (hub id or directory) than the model's own; its chat template then formats every
    conversation."""
    system_prompt: str | None = None
    """A system message prepended to every conversation THIS model sees (context distillation: give it to the
    teacher, never the student)."""
    demonstrations: tuple[Demonstration, ...] = ()
    """Example turns prepended to every conversation this model sees, after the system prompt (context
    distillation)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """The weights' dtype when loaded; `auto`: float32 on a CPU, bfloat16 on an accelerator."""
    device: str = "auto"
    """Where the model runs (`cpu`, `cuda`, `cuda:1`, ...); `auto`: the accelerator when there is one."""
    seed: int = 0
    """Only for tiny random-init models: fixes the initial weights."""
    end_of_turn: str | None = None
    """The token that ends an assistant turn, e.g. "<end_of_turn>"; by default read off the chat template
    (harness.models.chat.end_of_turn_from_template), which is right for Gemma-2, Llama-3.x and ChatML."""
    date_string: str = "26 Jul 2024"
    """Passed to the chat template as `date_string` (Llama-3.x write it as "Today Date:"; Llama-3.2's would
    otherwise write the calendar day of the run). Default: the templates' own default date. Part of the
    model's identity (cache keys)."""
    device_map: Literal["auto", "balanced", "sequential"] | None = None
    """A model larger than one GPU: `auto` spreads its layers over the visible GPUs (accelerate's dispatch;
    scoring and hf generation run through it). For a single-process run (under a launch each process sees
    the GPUs it is given). Placement only: not part of the model's identity."""
    offload: bool = False
    """Kept in host memory except while a stage uses it: a teacher that does not fit beside the student is
    moved to the GPU for the signal and evaluation stages and back to host memory for training."""
    quantization: Quantization | None = None
    """Weights loaded quantized (harness.models.quantize), part of the model's identity: `int8` (bitsandbytes
    LLM.int8 on CUDA when installed, else torchao's int8 weight-only, which also runs on CPUs) or `nf4`
    (bitsandbytes 4-bit NormalFloat, CUDA only). A student may be quantized only with `lora` (QLoRA). vLLM
    engines take vLLM's own `backends.vllm.quantization` instead."""
    lora: LoraSpec | None = None
    """The student only: train LoRA adapters (LoraSpec)."""


class PromptSource(Frozen):
    """Training prompts: `sharegpt` (the offline package), `jsonl:<path>`, or `hf:<dataset id>`."""

    source: str = "sharegpt"
    """Where the training prompts come from: `sharegpt` (the offline package), `jsonl:<path>` or `hf:<dataset
    id>`."""
    split: str = "train"
    """The dataset split read (hf sources)."""
    field: str | None = None
    """For jsonl/hf: the column holding the prompt text."""
    count: int = Field(32, ge=1)
    """How many training prompts are drawn (see count_after_filters)."""
    count_after_filters: bool = False
    """`false`: `count` prompts are drawn and sampled (the sampling filter may drop some). `true`: `count` is what
    must REMAIN after the sampling filter (fewer than sampling.n distinct responses): prompts are drawn
    further in the seeded order until `count` survive (harness.stages.data), as the released PAD data's
    55,321 prompts were counted. Held-out prompts (teacher_agreement) then come from the source's end."""
    seed: int = 0
    """Seed of the order in which prompts are drawn from the source."""
    max_prompt_chars: int = Field(400, ge=16)
    """Longer prompts are skipped when drawing."""
    min_prompt_chars: int = Field(8, ge=1)
    """Shorter prompts are skipped when drawing."""

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if not self.count_after_filters:
            data.pop("count_after_filters", None)  # the default: keys made before the option existed stay valid
        return dict(data)


class SamplingConfig(Frozen):
    sampler: Literal["student", "teacher"] = "student"
    """Which model samples the candidate responses of each training prompt."""
    backend: str = "hf"
    """The generation backend that samples them (`hf`, `vllm`, a plugin); its settings are under
    `backends.<name>`."""
    candidates: int = Field(6, ge=1)
    """Drawn per prompt before the diversity selection."""
    n: int = Field(4, ge=2)
    """Kept per prompt."""
    first_pick: Literal["first", "farthest"] = "farthest"
    """The diversity selection's first pick: `first` = the first sample, as the released agg.py does;
    `farthest` = the sample with the largest total edit distance to the others."""
    drop_unfinished: bool = False
    """Candidates cut at max_new_tokens are kept (trained and scored without an end token) unless dropped
    here, before the diversity selection; a prompt left with fewer than n candidates is dropped."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature (above 0: the n responses of a prompt must differ)."""
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    """Nucleus sampling: the smallest token set holding this much probability."""
    max_new_tokens: int = Field(64, ge=1)
    """Longest sampled response, in tokens."""
    batch_size: int = Field(16, ge=1)
    """Sequences generated together (training samples, benchmark answers); also the benchmarks' scoring batch."""
    seed: int = 0
    """Seed of the sampling; each prompt's draws are a function of (seed, prompt id)."""

    @model_validator(mode="after")
    def _n_le_candidates(self) -> SamplingConfig:
        if self.n > self.candidates:
            raise ValueError(f"sampling.n ({self.n}) must be <= sampling.candidates ({self.candidates})")
        if self.temperature == 0:
            raise ValueError(f"sampling.temperature: 0 is greedy decoding, so every candidate of a prompt is the "
                             f"same response and no prompt keeps sampling.n ({self.n}) distinct ones; use a "
                             f"temperature above 0 (default 1.0)")
        return self


class SignalsConfig(Frozen):
    topk: int = Field(20, ge=1)
    """Teacher top-k log-probs per response token, for token-level KD."""
    batch_size: int = Field(8, ge=1)
    """Sequences scored together when computing the signals."""
    mcq: Literal["released", "debiased"] = "released"
    """How the teacher's MCQ preference is read (harness.signals): `released` = the released PAD code (each
    pair once, raw top-20 letter probabilities); `debiased` = both orders, renormalised."""
    mcq_template: str | None = None
    """None: the rule's own prompt ("released" or "default")."""


# What a method may set for itself: its optimizer (methods differ by orders of magnitude in what works).
# Everything else in `budget:` (steps/epochs, batch, lengths, token and FLOP caps) is matched across methods.
OPTIMIZER_FIELDS = ("learning_rate", "schedule", "warmup_ratio", "weight_decay", "max_grad_norm")


class OptimizerSettings(Frozen):
    """A method's own optimizer settings; each field set overrides the budget's default for that method."""

    learning_rate: float | None = Field(None, gt=0)
    """This method's peak learning rate (default: budget.learning_rate)."""
    schedule: Literal["cosine", "linear", "constant"] | None = None
    """This method's learning-rate schedule (default: budget.schedule)."""
    warmup_ratio: float | None = Field(None, ge=0, le=1)
    """This method's warmup, as a share of its optimizer steps (default: budget.warmup_ratio)."""
    weight_decay: float | None = Field(None, ge=0)
    """This method's AdamW weight decay (default: budget.weight_decay)."""
    max_grad_norm: float | None = Field(None, gt=0)
    """This method's gradient-norm clipping (default: budget.max_grad_norm)."""

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class MethodSpec(Frozen):
    """One method to train. `label` names the leaderboard row (defaults to `name`). `optimizer` overrides the
    budget's optimizer defaults for this method only; `search` (with the experiment's `tuning:`) lists the
    values to try, keyed `optimizer.<field>` or `params.<name>` (harness.tuning)."""

    name: str
    """A registered method (`pad-harness methods` lists them)."""
    label: str | None = None
    """The leaderboard row's name; default: `name`. Give two entries of one method distinct labels."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The method's own parameters, validated by its `Params` (listed per method below)."""
    optimizer: OptimizerSettings = OptimizerSettings()
    """This method's own optimizer settings, over the budget's defaults."""
    search: dict[str, tuple[Any, ...]] = Field(default_factory=dict)
    """Values to try per setting (`optimizer.<field>` or `params.<name>` -> list), with the experiment's
    `tuning:`."""

    @property
    def row_name(self) -> str:
        return self.label or self.name

    @model_validator(mode="before")
    @classmethod
    def _matched_stays_matched(cls, data: Any) -> Any:
        optimizer = data.get("optimizer") if isinstance(data, dict) else None
        if isinstance(optimizer, dict):
            matched = sorted(k for k in optimizer if k in Budget.model_fields and k not in OPTIMIZER_FIELDS)
            if matched:
                raise ValueError(f"optimizer: {matched} cannot be set per method: what is matched (steps/epochs, "
                                 f"batch, lengths, token and FLOP caps) is set once, in `budget:`; a method may set "
                                 f"only {list(OPTIMIZER_FIELDS)}")
        return data

    def effective_budget(self, budget: Budget) -> Budget:
        """The experiment's budget with this method's own optimizer settings."""
        overrides = self.optimizer.overrides()
        return budget.model_copy(update=overrides) if overrides else budget


# How a prompt and the responses sampled for it are cut to the budget's lengths (Budget.truncation).
Truncation = Literal["per_response", "group_as_released"]


class Budget(Frozen):
    """One matched budget, applied to every method."""

    epochs: float | None = Field(1.0, gt=0)
    """Passes over the shared training set (max_steps wins when set)."""
    max_steps: int | None = Field(None, ge=1)
    """Optimizer steps; overrides epochs when set."""
    effective_batch: int = Field(8, ge=1)
    """Prompts per optimizer step."""
    micro_batch: int = Field(4, ge=1)
    """Prompts per forward/backward."""
    max_length: int = Field(256, ge=8)
    """Prompt + response tokens."""
    max_prompt_length: int = Field(128, ge=4)
    """The longest prompt trained on, in tokens (a longer one keeps its last tokens; see `truncation`)."""
    truncation: Truncation = "per_response"
    """How a prompt and the responses sampled for it are cut to those lengths
    (harness.methods.common.fit_group): `per_response`: the prompt to its last max_prompt_length tokens,
    each response on its own to what the prompt leaves; `group_as_released`: the released PAD code's rule
    (TRL's DPO/SimPO trainer): only when the prompt + the group's LONGEST response exceed max_length, the
    prompt is cut to max_prompt_length and then every response of the group to max_length -
    max_prompt_length, without an end-of-turn token."""
    learning_rate: float = Field(1e-5, gt=0)
    """Peak learning rate (AdamW); a method's `optimizer.learning_rate` overrides it."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate schedule after warmup."""
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    """Linear warmup, as a share of the optimizer steps."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Gradients are clipped to this norm; None: no clipping."""
    max_student_tokens: int | None = Field(None, ge=1)
    """A cap on the student tokens trained on: training stops before the step that would exceed it."""
    max_flops: float | None = Field(None, gt=0)
    """A cap on the estimated training FLOPs: training stops before the step that would exceed it."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more compute."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """Autocast precision while training (master weights stay fp32); `auto` follows the student's load dtype."""
    checkpoint_every: int = Field(0, ge=0)
    """Optimizer steps between checkpoints (and one at the end). 0 = none: an interrupted method trains again
    from its start (the same result, as training is deterministic), and no checkpoint is written."""
    keep_checkpoints: bool = False
    """A checkpoint (weights + AdamW moments: ~3x the model's size) exists to resume an interrupted run; once
    the trained model is stored as an artifact it is deleted unless kept (for inspection)."""

    # How training is stored, not what it computes (resumed == uninterrupted): not part of any cache key.
    STORAGE_FIELDS: ClassVar[frozenset[str]] = frozenset({"checkpoint_every", "keep_checkpoints"})

    def result_inputs(self) -> dict[str, Any]:
        """The fields that change what training produces (the train artifact's key and resume check)."""
        fields = self.model_dump(mode="json", exclude=set(self.STORAGE_FIELDS))
        if self.truncation == "per_response":
            del fields["truncation"]  # the rule before the option existed: keys made then stay valid
        return fields

    @model_validator(mode="after")
    def _batches(self) -> Budget:
        if self.effective_batch % self.micro_batch:
            raise ValueError(
                f"budget.effective_batch ({self.effective_batch}) must be a multiple of "
                f"budget.micro_batch ({self.micro_batch})"
            )
        if self.epochs is None and self.max_steps is None:
            raise ValueError("budget needs epochs or max_steps")
        return self


class SelectOn(Frozen):
    """What tuning selects on: a benchmark's DEV split (disjoint from training and test items), one metric."""

    benchmark: str = "teacher_agreement"
    """The benchmark whose dev split the trials are scored on."""
    metric: str | None = None
    """None: the benchmark's headline metric."""
    subset: int | None = Field(None, ge=1)
    """Dev items; None: the benchmark's own default."""


class TuningConfig(Frozen):
    """The matched search budget: every method with a `search:` gets exactly `trials` trials (a larger grid
    subsampled with `seed`), each trained under the budget with the first training seed, selected on the
    dev split `select_on` names (harness.tuning)."""

    trials: int = Field(ge=1)
    """Trials per tuned method (the same for every method: the matched search budget)."""
    select_on: SelectOn = SelectOn()
    """What the trials are selected on."""
    seed: int = 0
    """Seed of the subsampling of a grid larger than `trials`."""


class JudgeSpec(Frozen):
    """`backend` is a registered judge (`local`, `openai`, ...). The API key is read from the environment
    variable named by `api_key_env`, never from the file, so it cannot leak into artifacts. `model:
    official` takes each benchmark's official judge model (harness.judges.choice)."""

    backend: str = "local"
    """A registered judge backend (`local`, `openai`, `vllm_server`, ...; `pad-harness judges` lists them)."""
    model: str = "smollm2-135m-instruct"
    """The judge model: a model as `ModelSpec.model` takes it (local, vllm_server), a server's model name
    (openai), or `official` (each benchmark's official judge)."""
    base_url: str | None = None
    """An OpenAI-compatible server's URL; default: OpenAI's API."""
    api_key_env: str = "OPENAI_API_KEY"
    """The environment variable holding the API key (the key itself is never in the file)."""
    concurrency: int = Field(8, ge=1)
    """Requests in flight at once."""
    max_retries: int = Field(5, ge=0)
    """Retries of a failed request before it counts as failed."""
    timeout_s: float = Field(60.0, gt=0)
    """Seconds a request may take."""
    system_prompt: str | None = None
    """A system message added to every request that has none of its own."""
    price_per_1k_input: float = 0.0
    """USD per 1,000 prompt tokens, for the cost column."""
    price_per_1k_output: float = 0.0
    """USD per 1,000 completion tokens, for the cost column."""
    server_args: tuple[str, ...] = ()
    """`vllm_server` judges: extra flags for vLLM's OpenAI server (e.g. ["--tensor-parallel-size", "4"])."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The backend's own settings, validated by its `Params` (local: {batch_size, seed}; openai: backoff)."""


class BenchmarkSpec(Frozen):
    name: str
    """A registered benchmark (`pad-harness benchmarks` lists them)."""
    subset: int | None = Field(None, ge=1)
    """First N items (in the data's own order); None = all."""
    max_new_tokens: int | None = Field(None, ge=1)
    """Answer length; None = the benchmark's official default (Arena-Hard v0.1 4096 and v2.0 8196, MT-Bench
    1024, AlpacaEval 2 2048, ...), never above the model's context (checked by `validate`)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The benchmark's own parameters, validated by its `Params` (listed per benchmark below)."""
    optional: bool = False
    """When its data cannot be found (e.g. offline), an optional benchmark is skipped and the report says why,
    instead of failing the run. Off by default: a missing benchmark is normally an error."""
    judge: JudgeSpec | None = None
    """This benchmark's own judge; the experiment's `judge:` when absent (harness.judges.choice)."""


class ExternalSpec(Frozen):
    """A row not trained here (`external:`): a model trained elsewhere, evaluated and judged like every row,
    or the answers another tool produced, in the benchmarks' official formats (judged like every row).

        external:
          - label: zephyr-7b                     # the leaderboard row
            model: HuggingFaceH4/zephyr-7b-beta  # a hub id or local directory with its own chat template
          - label: other-tool
            answers: {alpaca_eval2: outputs/model_outputs.json, mt_bench: outputs/model_answer/m.jsonl}

    Answers files are read by `Benchmark.read_official_answers` (paths relative to the experiment file);
    a benchmark without a file is not evaluated for that row. The row is marked external on the
    leaderboard: it did not train under the matched budget."""

    label: str
    """The leaderboard row's name."""
    model: ModelSpec | None = None
    """A model trained elsewhere, evaluated here (`model: org/name` is short for `model: {model: org/name}`)."""
    answers: dict[str, str] = Field(default_factory=dict)
    """Benchmark name -> answers file."""

    @model_validator(mode="before")
    @classmethod
    def _model_shorthand(cls, data: Any) -> Any:
        """`model: org/name` is `model: {model: org/name}`."""
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            return {**data, "model": {"model": data["model"]}}
        return data

    @model_validator(mode="after")
    def _model_or_answers(self) -> ExternalSpec:
        if (self.model is None) == (not self.answers):
            raise ValueError(f"external {self.label!r}: give either `model:` (a model to evaluate) or `answers:` "
                             f"(benchmark -> official answers file), not both or neither")
        if self.model is not None and (self.model.system_prompt or self.model.demonstrations):
            raise ValueError(f"external {self.label!r}: model.system_prompt/demonstrations would give it a context "
                             f"no other row answers with; remove them")
        if self.model is not None and self.model.lora is not None:
            raise ValueError(f"external {self.label!r}: model.lora trains adapters, and an external row is not "
                             f"trained here; remove it")
        return self


class LoggingConfig(Frozen):
    """Where a run is tracked: per-step training metrics (`every` steps) and, once the reports are written, one
    run per leaderboard row with its scores, config, the leaderboard and answer samples (harness.tracking).
    W&B's mode comes from `WANDB_MODE` (offline needs no login)."""

    tensorboard: bool = False
    """Write TensorBoard event files (RUN_DIR/tensorboard)."""
    wandb: bool = False
    """Log to Weights & Biases."""
    wandb_project: str = "pad-harness"
    """The W&B project the runs go to."""
    every: int = Field(1, ge=1)
    """Log training metrics every this many optimizer steps."""
    mlflow: bool = False
    """Log to MLflow."""
    mlflow_tracking_uri: str | None = None
    """None: MLFLOW_TRACKING_URI, else a file store in RUN_DIR/mlruns."""


class DataParallelConfig(Frozen):
    """How the per-prompt stages (samples, signals) split across the processes of a launch (`torchrun`,
    `accelerate launch`): in chunks of `chunk` prompts (or sampled groups), chunk j on process j mod N.
    A single process computes the same chunks, so the merged artifact does not depend on how many processes
    made it; finished chunks survive an interruption (a restarted process computes only its missing ones)."""

    chunk: int = Field(256, ge=1)
    """Prompts (or sampled groups) per chunk."""


class Experiment(Frozen):
    name: str
    """The experiment's name (the run directory's default name, report titles)."""
    description: str = ""
    """A free-text description, shown in the reports."""
    output_dir: str = "runs/{name}"
    """The run directory; `{name}` is replaced by the experiment's name. Relative paths are relative to the
    working directory."""
    teacher: ModelSpec
    """The teacher model."""
    student: ModelSpec
    """The student model (trained by every method from the same initial weights)."""
    prompts: PromptSource = PromptSource()
    """The training prompts."""
    sampling: SamplingConfig = SamplingConfig()
    """How the candidate responses of each training prompt are sampled."""
    signals: SignalsConfig = SignalsConfig()
    """How the shared teacher/student signals are computed."""
    methods: tuple[MethodSpec, ...]
    """The methods to train, one leaderboard row each (per seed)."""
    budget: Budget = Budget()
    """The one budget every method trains under."""
    seeds: tuple[int, ...] = (0,)
    """Training seeds: every method trains once per seed."""
    benchmarks: tuple[BenchmarkSpec, ...] = ()
    """The benchmarks every row is evaluated on."""
    judge: JudgeSpec = JudgeSpec()
    """The judge of benchmarks that need one and name none of their own."""
    generation_backend: str = "hf"
    """The generation backend that answers the benchmarks (`hf`, `vllm`, a plugin)."""
    backends: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per generation backend, its own parameters (validated by the backend's `Params`), e.g. `backends:
    {vllm: {tensor_parallel_size: 2, max_model_len: 8192}}`."""
    logging: LoggingConfig = LoggingConfig()
    """Where the run is tracked."""
    data_parallel: DataParallelConfig = DataParallelConfig()
    """How per-prompt stages split across the processes of a launch."""
    tuning: TuningConfig | None = None
    """The matched tuning budget of methods with a `search:`; None: no tuning."""
    external: tuple[ExternalSpec, ...] = ()
    """Rows not trained here (ExternalSpec)."""
    setting: str = ""
    """One plain sentence the report prints: what is being distilled into what."""
    # Where it came from (`load_experiment`): the file, its `extends:` chain, the `--set` overrides. Not a
    # field: in no key, no hash, no dump.
    _origin: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def origin(self) -> dict[str, Any]:
        return dict(self._origin)

    @property
    def layered(self) -> bool:
        """Made from more than one file's text (`extends:` or `--set`)."""
        return bool(self._origin.get("extends") or self._origin.get("overrides"))

    @model_validator(mode="after")
    def _unique_rows(self) -> Experiment:
        rows = [m.row_name for m in self.methods]
        dupes = sorted({r for r in rows if rows.count(r) > 1})
        if dupes:
            raise ValueError(f"methods: duplicate row names {dupes}; give each a distinct `label`")
        if not self.methods:
            raise ValueError("methods: empty; name at least one method to train (e.g. `- name: sft`; "
                             "`pad-harness methods` lists them)")
        if not self.seeds:
            raise ValueError("seeds: give at least one training seed")
        repeated = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if repeated:
            raise ValueError(f"seeds: {list(self.seeds)} repeats {repeated}; give each training seed once "
                             f"(a repeated seed trains the same model twice)")
        self._check_external(rows)
        budget = self.budget
        if self.teacher.lora is not None:
            raise ValueError("teacher.lora: adapters are trained on the student only; move `lora` under `student`")
        if self.student.quantization is not None and self.student.lora is None:
            raise ValueError(f"student.quantization: {self.student.quantization}: quantized weights cannot be "
                             f"trained in full; add `student.lora` (QLoRA: adapters on the quantized base) or "
                             f"remove the quantization")
        if self.student.offload:
            raise ValueError("student.offload: only the teacher can wait in host memory between stages (the "
                             "student's weights are in use by its own rows' engines and scorers); remove it")
        if budget.max_prompt_length >= budget.max_length:  # checked here too, so `validate` finds it
            raise ValueError(f"budget.max_prompt_length ({budget.max_prompt_length}) must be below "
                             f"budget.max_length ({budget.max_length}), which counts prompt + response tokens; "
                             f"lower the one or raise the other")
        return self

    def _check_external(self, method_rows: list[str]) -> None:
        taken = {"teacher", "student (untrained)", *method_rows}
        benchmarks = {b.name for b in self.benchmarks}
        for ext in self.external:
            if ext.label in taken:
                raise ValueError(f"external: label {ext.label!r} is already a row's name; give it another label")
            taken.add(ext.label)
            unknown = sorted(set(ext.answers) - benchmarks)
            if unknown:
                raise ValueError(f"external {ext.label!r}: answers for {unknown}, which this experiment does not "
                                 f"evaluate; its benchmarks: {sorted(benchmarks)}")

    def run_dir(self, base: Path | None = None) -> Path:
        try:
            path = Path(self.output_dir.format(name=self.name))
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"output_dir {self.output_dir!r}: cannot fill it in ({type(exc).__name__}: {exc}); "
                              f"the only placeholder is {{name}}") from None
        if not path.is_absolute() and base is not None:
            path = base / path
        return path


def _describe_location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Walk the schema along `loc` to list the keys allowed where an unknown key was found."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        args = getattr(annotation, "__args__", ()) or ()
        candidates = [annotation, *args]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return None


def format_validation_error(exc: ValidationError, source: str, model: type[BaseModel]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = _describe_location(loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            lines.append(f"unknown key {where!r}{hint}")
        elif err["type"] == "missing":
            lines.append(f"missing required key {where!r}")
        elif err["type"] == "value_error":  # a validator's own message: without pydantic's prefix and input
            message = str(err.get("ctx", {}).get("error", err["msg"]))
            named = not loc or message.startswith(str(loc[0]))
            lines.append(message if named else f"{where}: {message}")
        else:
            lines.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
    return f"{source}: " + "; ".join(lines)


def parse_experiment(data: Any, source: str = "<experiment>") -> Experiment:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: an experiment file must be a YAML mapping, got {type(data).__name__}")
    try:
        experiment = Experiment.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, Experiment)) from None
    _validate_plugins(experiment, source)
    return experiment


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Experiment:
    """An experiment file, with its `extends:` chain and the `--set` overrides applied (harness.config_layers)."""
    from harness.config_layers import apply_overrides, resolve_extends

    path = Path(path)
    data, chain = resolve_extends(path, local_paths=_external_paths_from)
    data = apply_overrides(data, overrides)
    source = str(path) + (f" (with --set {' '.join(overrides)})" if overrides else "")
    experiment = parse_experiment(data, source)
    experiment._origin = {"file": str(path), "extends": chain[:-1], "overrides": list(overrides)}
    return experiment


def _external_paths_from(data: Any, base: Path) -> Any:
    """`external[].answers` paths relative to the experiment file, as a reader of the file expects."""
    if not isinstance(data, dict) or not isinstance(data.get("external"), list):
        return data
    entries = []
    for entry in data["external"]:
        if isinstance(entry, dict) and isinstance(entry.get("answers"), dict):
            entry = {**entry, "answers": {name: str(base / path) if isinstance(path, str) else path
                                          for name, path in entry["answers"].items()}}
        entries.append(entry)
    return {**data, "external": entries}


def _validate_plugins(experiment: Experiment, source: str) -> None:
    """Unknown plugin names and bad plugin parameters are config errors too, found before any work."""
    from harness.registry import BENCHMARKS, JUDGES, METHODS

    for i, spec in enumerate(experiment.methods):
        try:
            method_cls = METHODS.get(spec.name)
        except Exception as exc:
            raise ConfigError(f"{source}: methods.{i}.name: {exc}") from None
        _validate_params(method_cls, spec.params, f"{source}: methods.{i} ({spec.name}).params")
    for i, bench in enumerate(experiment.benchmarks):
        try:
            bench_cls = BENCHMARKS.get(bench.name)
        except Exception as exc:
            raise ConfigError(f"{source}: benchmarks.{i}.name: {exc}") from None
        _validate_params(bench_cls, bench.params, f"{source}: benchmarks.{i} ({bench.name}).params")
    judges = [("judge", experiment.judge)] + [
        (f"benchmarks.{i} ({b.name}).judge", b.judge) for i, b in enumerate(experiment.benchmarks) if b.judge]
    for where, judge in judges:
        try:
            judge_cls = JUDGES.get(judge.backend)
        except Exception as exc:
            raise ConfigError(f"{source}: {where}.backend: {exc}") from None
        _validate_params(judge_cls, judge.params, f"{source}: {where}.params")
    from harness.registry import BACKENDS

    for name, params in experiment.backends.items():
        try:
            backend_cls = BACKENDS.get(name)
        except Exception as exc:
            raise ConfigError(f"{source}: backends.{name}: {exc}") from None
        _validate_params(backend_cls, params, f"{source}: backends.{name}")


def _validate_params(plugin_cls: Any, params: dict[str, Any], where: str) -> None:
    params_model = getattr(plugin_cls, "Params", None)
    if params_model is None:
        if params:
            raise ConfigError(f"{where}: this plugin takes no parameters, got {sorted(params)}")
        return
    try:
        params_model.model_validate(params)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where, params_model)) from None
