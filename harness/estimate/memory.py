"""Peak device memory of one stage's work, from model shapes, lengths and settings (bytes; no model loaded).

The formulas, per device (a data-parallel process holds one micro-batch; `Setup` says what is sharded):

Weights. `params x bytes` in the dtype loaded (fp32 4, bf16/fp16 2). Quantized weights (harness.models.quantize)
cover the linear layers only (bitsandbytes and torchao replace nn.Linear; embeddings and norms stay as loaded):
int8 1 B per weight (LLM.int8 / torchao int8 weight-only), nf4 0.5 B + 0.0625 B of block scales (QLoRA,
Dettmers et al. 2023: 64-weight blocks, double-quantised absmax).

Training, full fine-tuning (harness.training.precision: the student is upcast to fp32 master weights whatever
it was loaded in; torch AdamW with foreach=False keeps two fp32 moments and no per-step copies):
    master 4 B + gradients 4 B + AdamW 8 B = 16 B per parameter  (Rajbhandari et al. 2020, ZeRO, sec. 3.1,
    with fp32 master weights standing in for its fp16 weights + fp32 copy)
  + under bf16/fp16 autocast a 16-bit copy of every weight a matmul reads (autocast caches casts of leaf
    tensors that require grad for the whole autocast region: torch/csrc/autograd/autocast_mode.cpp): 2 B per
    parameter but the input embedding (a lookup, not cast);
  + the student as loaded, which the model pool keeps for scoring beside the copy that trains
    (harness.models.pool.fresh_copy);
  FSDP / ZeRO-3 over k GPUs (docs/multi-gpu.md) divide master, gradients and AdamW state by k.
Training with LoRA (harness.training.lora): the base frozen in its load dtype (quantized under QLoRA), no
gradients and no AdamW state for it, no autocast cache (frozen weights are cast per use); the adapters are
fp32 and trained with AdamW: 16 B x sum over targeted linears of r x (in + out) (Hu et al. 2021).
Activations, per token of the micro-batch (micro_batch prompts x the method's sequences, each padded to the
longest: prompt + response at their caps; the shared-prompt layout runs a prompt once for its responses),
counted as Korthikanti et al. 2022 ("Reducing activation recomputation", sec. 4) count a layer's saved
tensors, for the Llama/Gemma-2 layer (gated MLP, RMSNorm, no dropout: the harness switches it off):
    per layer: a x (2 q_width + 2 kv_width + 4 intermediate)     q, k, v, attention output; gate, up, act, product
             + norms x (12 + c) x hidden                         RMSNorm computes in fp32: input, normalised,
                                                                 output (+ c = 2: the 16-bit cast a matmul saves)
             + heads x row_width x 8 (eager attention only)     Gemma-2's soft-capped scores: tanh output, fp32
                                                                 softmax, its 16-bit cast; sdpa keeps none
  with a = 2 B under 16-bit autocast (or a 16-bit LoRA base), else 4 B; x layers, or with gradient checkpointing
  (each decoder layer recomputed in backward, transformers' default) layers x hidden x 4 B (the fp32 layer
  inputs) + one layer's activations. LoRA adds r per adapted linear per token.
  + logits: tokens x vocab x (12 B + 2 B under 16-bit autocast): the fp32 log-softmax that every loss reads
    (harness.methods.common: its output saved, its gradient and the fp32 logits in backward) and the 16-bit
    logits; it dominates for a 256k vocabulary (Gemma-2).
Scoring (signals: log-probs, top-k, MCQ; harness.models.scoring): weights + at signals.batch_size sequences
    the longer of the prompt pass and the response pass, tokens x a x (4 hidden + 2 kv_width + 3 intermediate)
    (one layer's live tensors) + eager scores; the prompts' KV cache (and a bucket's copy of it); the response
    tokens' logits x vocab x (a + 8) (16-bit logits, fp32 log-softmax and its input; MCQ reads one position).
Generation with hf: weights + KV cache 2 x layers x kv_width x a per token x batch x (prompt + max_new_tokens)
  + the prefill's one-layer activations. With vLLM: the engine reserves gpu_memory_utilization x capacity by
  design (vLLM's docs: "the fraction of GPU memory to be used for the model executor"); what must fit in that
  share is weights / tensor_parallel_size + the KV cache of one max_model_len sequence (vLLM refuses to start
  otherwise).
A GKD train stage also holds the teacher (online every step; `offload` brings it back each time it is used)
and its no-grad forward, and the on-policy generation's KV cache (or, with sampling.backend vllm, an engine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.estimate.shapes import ModelShape

GiB = float(2**30)
ADAMW_BYTES = 8  # two fp32 moments per trained parameter
FP32 = 4
QUANTIZED_BYTES = {"int8": 1.0, "nf4": 0.5 + 0.0625}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NORM_BYTES = 12  # per RMSNorm and hidden unit: fp32 input, normalised value, output
EAGER_SCORE_BYTES = 8  # per attention score: tanh output (soft-capping), fp32 softmax, its 16-bit cast
LOGIT_BYTES = 12  # per token and vocabulary entry in training: fp32 log-softmax output, its gradient, fp32 logits


@dataclass(frozen=True)
class Memory:
    """One stage's peak, as named parts (bytes). `share`: a vLLM engine's reservation (its parts must fit
    in it, and the device gives it that much whatever they add up to)."""

    parts: tuple[tuple[str, float], ...]
    share: float | None = None

    @property
    def total(self) -> float:
        return sum(b for _, b in self.parts)

    def fits(self, capacity: float) -> bool:
        return self.total <= (self.share if self.share is not None else capacity)


def weight_bytes(shape: ModelShape, dtype_bytes: float, quantization: str | None = None) -> float:
    """A model's weights as loaded: the linear layers quantized if asked, the rest in the load dtype."""
    if quantization is None:
        return shape.params * dtype_bytes
    linear = shape.linear_params or shape.params
    return linear * QUANTIZED_BYTES[quantization] + (shape.params - linear) * dtype_bytes


def layer_activation_bytes(shape: ModelShape, act_bytes: float, row_width: float, autocast16: bool,
                           lora_r: int = 0) -> float:
    """Bytes one decoder layer saves for backward, per token (module docstring)."""
    tensors = 2 * shape.attention_width + 2 * shape.kv_width + 4 * shape.intermediate
    norms = shape.norms_per_layer * (NORM_BYTES + (2 if autocast16 else 0)) * shape.hidden
    scores = shape.heads * row_width * EAGER_SCORE_BYTES if shape.eager_attention else 0.0
    adapters = lora_r * len(shape.linears) * act_bytes  # each adapter's A x (rank r), per targeted linear
    return act_bytes * tensors + norms + scores + adapters


def training_activations(shape: ModelShape, tokens: float, row_width: float, act_bytes: float, autocast16: bool,
                         checkpointing: bool, lora_r: int = 0, residual_bytes: float = FP32) -> float:
    per_layer = layer_activation_bytes(shape, act_bytes, row_width, autocast16, lora_r)
    head = (NORM_BYTES + (2 if autocast16 else 0)) * shape.hidden  # the final norm before the LM head
    if checkpointing:
        return tokens * (shape.layers * shape.hidden * residual_bytes + per_layer + head)
    return tokens * (shape.layers * per_layer + head)


def logits_bytes(shape: ModelShape, tokens: float, autocast16: bool) -> float:
    return tokens * shape.vocab * (LOGIT_BYTES + (2 if autocast16 else 0))


def inference_activations(shape: ModelShape, tokens: float, row_width: float, act_bytes: float) -> float:
    """A no-grad forward: one layer's live tensors at a time."""
    per_token = act_bytes * (4 * shape.hidden + 2 * shape.kv_width + 3 * shape.intermediate)
    scores = shape.heads * row_width * (FP32 + act_bytes) if shape.eager_attention else 0.0
    return tokens * (per_token + scores)


def kv_cache_bytes(shape: ModelShape, tokens: float, act_bytes: float) -> float:
    """K and V of every layer for `tokens` positions."""
    return 2 * shape.layers * shape.kv_width * act_bytes * tokens


@dataclass(frozen=True)
class TrainingInputs:
    """One training micro-batch: its tokens (rows x padded width) and the precision it runs in."""

    rows: float
    width: float
    load_bytes: float  # the student's load dtype
    autocast16: bool  # bf16/fp16 autocast (budget.mixed_precision, resolved as the trainer does)
    checkpointing: bool
    lora: Any | None = None  # a LoraSpec
    quantization: str | None = None  # the student's (QLoRA)
    shards: int = 1  # FSDP / ZeRO-3 processes the trained state is split over

    @property
    def tokens(self) -> float:
        return self.rows * self.width


def training_parts(shape: ModelShape, t: TrainingInputs) -> list[tuple[str, float]]:
    """The student's side of a train stage (weights, trained state, activations, logits)."""
    base = weight_bytes(shape, t.load_bytes, t.quantization)
    parts = [("student as loaded (the pool's copy)", base)]
    if t.lora is None:
        cast = shape.params - (shape.vocab * shape.hidden if not shape.tied_embeddings else 0)
        parts += [("fp32 master weights", shape.params * FP32 / t.shards),
                  ("gradients (fp32)", shape.params * FP32 / t.shards),
                  ("AdamW moments (2 x fp32)", shape.params * ADAMW_BYTES / t.shards)]
        if t.autocast16:
            parts.append(("16-bit autocast weight copies", max(cast, 0) * 2))
        act_bytes, residual, rank = (2 if t.autocast16 else FP32), FP32, 0
    else:
        adapters = shape.lora_params(t.lora)
        parts += [("frozen base (the copy that trains)", base),
                  (f"LoRA adapters r={t.lora.r}: weights + grads + AdamW (16 B x {adapters / 1e6:.3g}M)",
                   adapters * (2 * FP32 + ADAMW_BYTES))]
        sixteen = t.autocast16 or t.load_bytes == 2 or t.quantization is not None
        act_bytes = residual = 2 if sixteen else FP32
        rank = t.lora.r
    parts.append(("activations" + (" (checkpointed)" if t.checkpointing else ""),
                  training_activations(shape, t.tokens, t.width, act_bytes, t.autocast16, t.checkpointing, rank,
                                       residual)))
    parts.append(("logits (fp32 log-softmax)", logits_bytes(shape, t.tokens, t.autocast16)))
    return parts


def scoring_parts(who: str, shape: ModelShape, dtype_bytes: float, quantization: str | None, rows: float,
                  prompt: float, response: float, all_logits: bool = True) -> list[tuple[str, float]]:
    """A no-grad scoring of `rows` sequences (harness.models.scoring): the prompts' pass, kept as a KV cache,
    then the responses' pass, whose logits are the only ones read (one position each under MCQ)."""
    act = 2 if dtype_bytes == 2 or quantization else FP32
    longest_pass = rows * max(prompt, response)
    logit_tokens = rows * response if all_logits else rows
    return [(f"{who} weights", weight_bytes(shape, dtype_bytes, quantization)),
            (f"{who} forward (no grad)", inference_activations(shape, longest_pass, prompt + response, act)),
            (f"{who} prompt KV cache", 2 * kv_cache_bytes(shape, rows * prompt, act)),  # cache + a bucket's copy
            (f"{who} logits (fp32 log-softmax)", logit_tokens * shape.vocab * (act + 2 * FP32))]


def hf_generation_parts(who: str, shape: ModelShape, dtype_bytes: float, quantization: str | None, batch: float,
                        prompt: float, new_tokens: float) -> list[tuple[str, float]]:
    act = 2 if dtype_bytes == 2 or quantization else FP32
    return [(f"{who} weights", weight_bytes(shape, dtype_bytes, quantization)),
            (f"{who} KV cache (batch {batch:g} x {prompt + new_tokens:.0f} tokens)",
             kv_cache_bytes(shape, batch * (prompt + new_tokens), act)),
            (f"{who} prefill", inference_activations(shape, batch * prompt, prompt, act))]


def vllm_parts(who: str, shape: ModelShape, dtype_bytes: float, max_model_len: float,
               tensor_parallel: int) -> list[tuple[str, float]]:
    """What must fit in the engine's share of one GPU (weights and KV split over tensor_parallel GPUs)."""
    return [(f"{who} weights / {tensor_parallel} GPU(s)", shape.params * dtype_bytes / tensor_parallel),
            (f"{who} KV cache of one {max_model_len:.0f}-token sequence",
             kv_cache_bytes(shape, max_model_len, dtype_bytes) / tensor_parallel)]
