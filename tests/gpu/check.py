#!/usr/bin/env python3
"""GPU check (issue 17): PAD and DPO training steps and HF generation on a Llama-3.2-1B-shaped student.

On a GPU box, from the repository root, installing nothing:

    python tests/gpu/check.py            # or: tox -e gpu (uses the interpreter's own packages, installs nothing)

It needs only torch, transformers and accelerate (peft is allowed but not used) and the standard library,
no network, no package index, and from the repository only the files listed in `REPO_FILES` (82 kB of source;
the repository's tracked files are 1.5 MB). It prints ONE JSON object on stdout (progress goes to
stderr) and exits 0 when every section ran and passed its sanity checks, 1 otherwise.

What it measures, on a randomly initialised LlamaForCausalLM shaped like Llama-3.2-1B (no download: the
shape is copied from the published config.json of meta-llama/Llama-3.2-1B, see `LLAMA_3_2_1B`), loaded in
bf16 and trained the way harness/training/trainer.py trains a bf16 student (fp32 master weights from
`harness.training.precision.fp32_master_weights`, dropout off, bf16 autocast, grad-norm clip 1.0, AdamW
betas (0.9, 0.999), eps 1e-8, weight decay 0, foreach=False, lr 8e-7 as in the paper's configs):

  master_weights  2 PAD steps (micro-batch 1) with a plain bf16 AdamW copy of the weights fed the same
                  clipped gradients: the fraction of elements each moved. The fp32 master weights must move
                  (> 90% of elements), the bf16 copy must not (< 10%: bf16 rounds an 8e-7 update away).
  pad             PAD-PPD training steps: the real loss (`harness.methods.pad_loss.pad_loss_and_jsd`, the
                  PADMethod defaults: beta 10, exact enumeration of the 4! rankings) on the real shared-prompt
                  layout (`harness.methods.shared_prompt.pack_groups`: each prompt runs once for its 4
                  responses, under the 4D mask with `sdpa` attention).
  dpo             DPO (sigmoid, beta 0.1) training steps: the real loss (`baselines.dpo_loss.dpo_loss`) on the
                  pair layout DPOMethod uses when prompts are shared (chosen and rejected share one prompt
                  encoding), with cached reference log-probabilities as DPOMethod has them.
  generation      greedy decoding with transformers' `model.generate` (bf16 weights, batch 32, 128 prompt
                  tokens, 256 new tokens, end-of-sequence suppressed so every row decodes all 256). The
                  harness's own HFGenerator is not used: it imports harness.models.base, which needs pydantic.

Batch shapes follow the paper's PAD training: 4 responses per prompt, sequences of max_length 1024 tokens
(prompt 512 + response 512: every sequence is at the limit, so no padding). Micro-batch: 4 prompts for PAD
(16 sequences, 4 x 2559 = 10236 tokens run with shared prompts) and 8 pairs for DPO (16 sequences, 8 x 1535
= 12280 tokens), chosen to fit an 80 GB GPU without activation checkpointing (an estimate, not measured:
about 20 GB of fp32 weights, gradients and AdamW moments, 2.5 GB of autocast's bf16 weight copies, about 2 MB
of saved activations per token (20-26 GB) and 10-15 GB of logits and their gradients: 55-65 GB). Should a
micro-batch still run out of memory, the section halves it and retries (reported in `micro_batch` and
`oom_retries`). `--gradient-checkpointing`, `--micro-batch`, `--max-length` and
`--max-prompt-length` change this (the paper configs use 2048 / 1800 with checkpointing and micro-batch 2).

Each training section runs 2 warm-up steps, then times up to 5 steps (packing, host-to-device copy, forward,
backward, clip and the AdamW step, synchronised: what the trainer's step time covers). tokens/s counts the
tokens the model runs (no padding; with shared prompts a prompt counts once per group), as the trainer's
accounting does; `sequence_tokens_per_s` counts every (prompt, response) sequence in full (what one row per
sequence would have to run). MFU = 6 * N * tokens / (time * peak) with N the distinct parameters (tied
embeddings once, so the lm_head matmul counts; the embedding lookup is no matmul); attention's
sequence-length FLOPs are NOT counted in `mfu` (harness/training/accounting.py's convention); they are in
`mfu_with_attention` (12 * layers * heads * head_dim per (query, key) pair the shared-prompt mask allows), and
`attention_flops_share` gives their part: 3.4% for PAD and 3.1% for DPO at the full shapes. Peak: `harness.training.accounting.peak_flops_for` (dense bf16
data-sheet figures) or `--peak-tflops`. Peak memory: `torch.cuda.max_memory_allocated` per section.

Time: at most 8 minutes (`--budget-s 480`, including imports): every section has its own cap
(`SECTION_CAPS_S`) and stops timing steps when it is spent (after at least one), sections that no longer
fit are skipped and reported; every row gives its elapsed seconds.

`--device cpu --tiny` runs the same code on a tiny Llama (2 layers, hidden 64, 16+16 tokens) on CPU in a
few seconds: tests/test_gpu_check.py runs it in a subprocess that sees only torch, transformers, accelerate
(and peft where installed) with their own dependencies, refuses any other import made by the check or the
repository modules it uses, and checks the JSON's fields and sanity.

What was run when this check was written: only the CPU tiny mode (no GPU was available to that session).
The full mode has NOT run on a GPU yet: its CUDA-only lines (memory statistics, synchronisation, the device
name and peak lookup, the out-of-memory retry) are unexecuted, and the memory estimate above is unmeasured.
Record its figures in docs/performance.md when a GPU is available.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

START = time.perf_counter()
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `python tests/gpu/check.py` puts tests/gpu first, not the repository root
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from baselines.dpo_loss import dpo_loss  # noqa: E402
from harness.methods.pad_loss import RankingSupport, pad_loss_and_jsd  # noqa: E402
from harness.methods.shared_prompt import GroupPacked, pack_groups, shares_prompts  # noqa: E402

# What a bare box needs. Top-level packages the check and the repository modules it uses may import,
# besides the standard library (tests/test_gpu_check.py enforces it, statically and at run time).
ALLOWED_PACKAGES = ("torch", "transformers", "accelerate", "peft")
REPO_PACKAGES = ("harness", "baselines")
# Loaded from their files: importing them as harness.training.X would run harness/training/__init__.py,
# which imports the trainer (tqdm, pydantic). Both need only torch (precision.py: accelerate, lazily).
LOADED_BY_PATH = ("harness/training/accounting.py", "harness/training/precision.py")
REPO_FILES = (
    "tests/gpu/check.py",
    "harness/__init__.py",
    "harness/methods/__init__.py",
    "harness/methods/pad_loss.py",
    "harness/methods/shared_prompt.py",
    "harness/methods/common.py",
    "baselines/__init__.py",
    "baselines/dpo_loss.py",
    *LOADED_BY_PATH,
)

# meta-llama/Llama-3.2-1B, config.json as published on the Hugging Face hub (transformers 4.45 format):
# https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json
LLAMA_3_2_1B: dict[str, Any] = {
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": True,
    "attention_bias": False,
    "mlp_bias": False,
    "initializer_range": 0.02,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
}
LLAMA_3_2_1B_SOURCE = "https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json"
TINY_LLAMA: dict[str, Any] = {**LLAMA_3_2_1B, "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
                              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                              "head_dim": 16, "bos_token_id": 1, "eos_token_id": 2}

LEARNING_RATE = 8e-7  # the paper's (leaderboards/gemma2-9b-to-2b.yaml, llama3-8b-to-1b.yaml)
MAX_GRAD_NORM = 1.0  # Budget.max_grad_norm's default
PAD_BETA = 10.0  # PADParams' default (the released run)
DPO_BETA = 0.1  # DPOParams' default
PAD_ID = 0  # random token ids are drawn from [1, vocab)
MOVED_FP32_MIN = 0.9  # fraction of elements the fp32 master weights must change in `master_steps` steps
MOVED_BF16_MAX = 0.1  # ... and the most a bf16 AdamW copy may change (about 1% is expected)
SECTION_CAPS_S = {"build": 120.0, "master_weights": 60.0, "pad": 90.0, "dpo": 90.0, "generation": 90.0}


@dataclass(frozen=True)
class Shapes:
    responses: int  # PAD responses per prompt
    max_length: int  # prompt + response tokens
    max_prompt_length: int
    pad_micro_batch: int  # prompts per PAD micro-batch
    dpo_micro_batch: int  # pairs (prompts) per DPO micro-batch
    warmup_steps: int
    timed_steps: int
    master_steps: int
    gen_batch: int
    gen_prompt_tokens: int
    gen_new_tokens: int


FULL = Shapes(responses=4, max_length=1024, max_prompt_length=512, pad_micro_batch=4, dpo_micro_batch=8,
              warmup_steps=2, timed_steps=5, master_steps=2, gen_batch=32, gen_prompt_tokens=128,
              gen_new_tokens=256)
TINY = Shapes(responses=4, max_length=32, max_prompt_length=16, pad_micro_batch=2, dpo_micro_batch=4,
              warmup_steps=1, timed_steps=2, master_steps=2, gen_batch=4, gen_prompt_tokens=8, gen_new_tokens=16)


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f}s] {message}", file=sys.stderr, flush=True)


def load_by_path(relative: str) -> ModuleType:
    """A repository module executed from its file under a private name, its package's __init__ not run."""
    path = REPO / relative
    name = "_gpu_check_" + path.stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class body runs
    spec.loader.exec_module(module)
    return module


accounting = load_by_path("harness/training/accounting.py")
precision = load_by_path("harness/training/precision.py")


# ---------------------------------------------------------------- model, optimizer, one training step


def build_model(config_kwargs: dict[str, Any], device: torch.device) -> torch.nn.Module:
    """A random-init LlamaForCausalLM in bf16 (how the paper's configs load the student), `sdpa` attention."""
    config = LlamaConfig(**config_kwargs, attn_implementation="sdpa")  # type: ignore[call-arg]
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with device:  # parameters are created (and initialised) on the device
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    return model.to(device=device, dtype=torch.bfloat16)  # type: ignore[call-arg]


def adamw(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """harness/training/trainer.py `_optimizer` with Budget's default weight decay (0)."""
    params = [p for p in params if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.0},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, foreach=False)


def set_activation_checkpointing(model: Any, on: bool) -> None:
    """harness/training/trainer.py `_set_activation_checkpointing` (transformers 5 renamed the methods)."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def pad_step_loss(model: torch.nn.Module, packed: GroupPacked, teacher: torch.Tensor) -> torch.Tensor:
    """`PADMethod.loss` (harness/methods/pad.py) with PADParams' defaults, without its metrics."""
    _, mean_logprobs, _ = packed.sequence_logprobs(model)
    student = PAD_BETA * mean_logprobs.float().view(teacher.shape)  # pad.student_scores
    loss, _ = pad_loss_and_jsd(student, teacher, "ppd", False, RankingSupport(), None)
    return loss


def dpo_step_loss(model: torch.nn.Module, packed: GroupPacked, ref_chosen: torch.Tensor,
                  ref_rejected: torch.Tensor) -> torch.Tensor:
    """`DPOMethod.loss` (baselines/dpo.py: `pair_logprobs` + `dpo_loss`) with DPOParams' defaults."""
    total, _, count = packed.sequence_logprobs(model)
    b = ref_chosen.shape[0]
    return dpo_loss(total[:b], total[b:], ref_chosen, ref_rejected, DPO_BETA, "sigmoid", count[:b], count[b:]).mean()


@dataclass
class Batch:
    packed: GroupPacked
    loss: Callable[[torch.nn.Module], torch.Tensor]
    tokens: int  # tokens the model runs (the trainer's `student_tokens`)
    sequence_tokens: int  # prompt + response tokens of every sequence, each counted in full


def random_tokens(generator: torch.Generator, vocab: int, *shape: int) -> list[Any]:
    return torch.randint(1, vocab, shape, generator=generator).tolist()  # type: ignore[no-any-return]


def pad_raw(generator: torch.Generator, shapes: Shapes, prompts: int, vocab: int) -> dict[str, Any]:
    """What PAD's collate receives from the tokenizer: full-length prompts and responses, teacher scores."""
    response_len = shapes.max_length - shapes.max_prompt_length
    wins = torch.rand((prompts, shapes.responses), generator=generator).clamp(0.05, 0.95)
    return {"prompts": random_tokens(generator, vocab, prompts, shapes.max_prompt_length),
            "responses": random_tokens(generator, vocab, prompts, shapes.responses, response_len),
            "teacher": PAD_BETA * wins.log()}  # pad.teacher_scores with alpha 0: beta * log m_i


def pad_batch(raw: dict[str, Any], shapes: Shapes, device: torch.device) -> Batch:
    """PADMethod.collate with shared prompts, then the trainer's move to the device."""
    packed = pack_groups(raw["prompts"], raw["responses"], PAD_ID, shapes.max_length, shapes.max_prompt_length)
    teacher = raw["teacher"].to(device)
    seq = sum(len(p) + len(r) for p, rs in zip(raw["prompts"], raw["responses"], strict=True) for r in rs)
    packed_on = packed.to(device)
    return Batch(packed_on, lambda model: pad_step_loss(model, packed_on, teacher), packed.num_tokens, seq)


def dpo_raw(generator: torch.Generator, shapes: Shapes, pairs: int, vocab: int) -> dict[str, Any]:
    response_len = shapes.max_length - shapes.max_prompt_length
    # The cached reference log-probs of the initial student: about -ln(vocab) per token for a random model.
    ref = -response_len * math.log(vocab) + torch.randn((2, pairs), generator=generator)
    return {"prompts": random_tokens(generator, vocab, pairs, shapes.max_prompt_length),
            "responses": random_tokens(generator, vocab, pairs, 2, response_len), "ref": ref}


def dpo_batch(raw: dict[str, Any], shapes: Shapes, device: torch.device) -> Batch:
    """PairwiseMethod.collate with shared prompts (baselines/batching.py `pack_pair_groups`'s layout: every
    chosen response first, then every rejected one), then the move to the device."""
    b = len(raw["prompts"])
    packed = pack_groups(raw["prompts"], raw["responses"], PAD_ID, shapes.max_length, shapes.max_prompt_length,
                         order=[[i, b + i] for i in range(b)])
    ref = raw["ref"].to(device)
    seq = sum(len(p) + len(r) for p, rs in zip(raw["prompts"], raw["responses"], strict=True) for r in rs)
    packed_on = packed.to(device)
    return Batch(packed_on, lambda model: dpo_step_loss(model, packed_on, ref[0], ref[1]), packed.num_tokens, seq)


def attention_pairs(packed: GroupPacked) -> int:
    """(query, key) pairs the shared-prompt mask allows, padding left out: the attention work that counts."""
    valid = packed.segment >= 0
    return int((packed.attention_mask()[:, 0] & valid[:, :, None]).sum())


def attention_flops_train(model: torch.nn.Module, pairs: int) -> float:
    """Forward QK^T and AV cost 2 * 2 * (heads * head_dim) FLOPs per allowed pair and layer; x3 with backward."""
    config: Any = model.config
    width = config.num_attention_heads * (getattr(config, "head_dim", None) or
                                          config.hidden_size // config.num_attention_heads)
    return 12.0 * config.num_hidden_layers * width * pairs


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, device: torch.device,
               before_update: Callable[[], None] | None = None) -> torch.Tensor:
    """The trainer's micro-batch (one per step here): bf16 autocast forward, backward, clip, AdamW step."""
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        loss = batch.loss(model)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
    if before_update is not None:
        before_update()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach().float()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, Any]:
    """This section's peak on a GPU (allocated, and reserved by the caching allocator); the process's peak
    RSS since it started on CPU (`accounting.current_peak_memory`)."""
    peak, kind = accounting.current_peak_memory(device)
    out = {"peak_memory_gib": round(peak / 2**30, 3), "peak_memory_kind": kind}
    if device.type == "cuda":
        out["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 3)
    return out


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- sections


class Clock:
    """The whole check's budget and each section's cap."""

    def __init__(self, budget_s: float) -> None:
        self.deadline = START + budget_s

    def section_deadline(self, name: str) -> float:
        return min(time.perf_counter() + SECTION_CAPS_S[name], self.deadline)

    def left(self) -> float:
        return self.deadline - time.perf_counter()


def master_weights_section(model: torch.nn.Module, shapes: Shapes, device: torch.device, vocab: int,
                           generator: torch.Generator) -> tuple[dict[str, Any], torch.optim.Optimizer]:
    """The trainer's upcast of a bf16 student, then PAD steps at lr 8e-7 that also feed the same clipped
    gradients to a plain bf16 AdamW copy of the weights: which of the two moves."""
    initial = [p.detach().clone() for p in model.parameters()]  # bf16, as loaded
    load_dtype = precision.fp32_master_weights(model)  # what train() does before building the optimizer
    precision.disable_dropout(model)
    params = list(model.parameters())
    optimizer = adamw(params, LEARNING_RATE)
    shadow = [torch.nn.Parameter(t.clone()) for t in initial]  # the bf16 copy AdamW would update in place
    shadow_optimizer = adamw(shadow, LEARNING_RATE)

    def copy_gradients() -> None:
        for s, p in zip(shadow, params, strict=True):
            s.grad = None if p.grad is None else p.grad.to(torch.bfloat16)

    losses = []
    for _ in range(shapes.master_steps):
        batch = pad_batch(pad_raw(generator, shapes, 1, vocab), shapes, device)
        losses.append(train_step(model, optimizer, batch, device, copy_gradients))
        shadow_optimizer.step()
        shadow_optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    total = sum(t.numel() for t in initial)
    moved_fp32 = sum(int((p.detach() != t.float()).sum()) for p, t in zip(params, initial, strict=True))
    moved_bf16 = sum(int((s.detach() != t).sum()) for s, t in zip(shadow, initial, strict=True))
    fp32, bf16 = moved_fp32 / total, moved_bf16 / total
    loss_values = [float(x) for x in losses]
    row = {
        "loaded_dtype": str(load_dtype).removeprefix("torch."),
        "master_dtype": str(params[0].dtype).removeprefix("torch."),
        "learning_rate": LEARNING_RATE,
        "steps": shapes.master_steps,
        "micro_batch": 1,
        "elements": total,
        "fp32_master_moved_fraction": round(fp32, 6),
        "bf16_adamw_moved_fraction": round(bf16, 6),
        "losses": loss_values,
        "loss_finite": all(math.isfinite(x) for x in loss_values),
        "ok": fp32 >= MOVED_FP32_MIN and bf16 <= MOVED_BF16_MAX and all(math.isfinite(x) for x in loss_values),
    }
    return row, optimizer


def training_section(name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, shapes: Shapes,
                     micro_batch: int, device: torch.device, vocab: int, params: int, peak_flops: float | None,
                     deadline: float, generator: torch.Generator) -> dict[str, Any]:
    """Warm-up steps, then timed steps until `timed_steps` or the deadline (at least one)."""
    make_raw, make_batch = (pad_raw, pad_batch) if name == "pad" else (dpo_raw, dpo_batch)
    steps = shapes.warmup_steps + shapes.timed_steps
    raws = [make_raw(generator, shapes, micro_batch, vocab) for _ in range(steps)]  # the tokenizer's part
    optimizer.zero_grad(set_to_none=True)  # nothing left over from a section that failed
    pairs = attention_pairs(make_batch(raws[0], shapes, torch.device("cpu")).packed)  # every step's (full length)
    losses: list[torch.Tensor] = []
    times: list[float] = []
    tokens = sequence_tokens = 0
    for i, raw in enumerate(raws):
        if i >= shapes.warmup_steps + 1 and time.perf_counter() >= deadline:
            break
        start = time.perf_counter()
        batch = make_batch(raw, shapes, device)
        losses.append(train_step(model, optimizer, batch, device))
        synchronize(device)  # honest step time, as the trainer does
        if i >= shapes.warmup_steps:
            times.append(time.perf_counter() - start)
            tokens += batch.tokens
            sequence_tokens += batch.sequence_tokens
        del batch
    loss_values = [float(x) for x in losses]
    seconds = sum(times)
    flops = accounting.flops_train(params, tokens)
    attention = attention_flops_train(model, pairs) * len(times)
    row = {
        "micro_batch": micro_batch,
        "responses_per_prompt": shapes.responses if name == "pad" else 2,
        "max_length": shapes.max_length,
        "max_prompt_length": shapes.max_prompt_length,
        "shared_prompt": True,
        "tokens_per_step": tokens // max(1, len(times)),
        "warmup_steps": shapes.warmup_steps,
        "timed_steps": len(times),
        "step_s": round(seconds / max(1, len(times)), 4),
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
        "sequence_tokens_per_s": round(sequence_tokens / seconds, 1) if seconds > 0 else None,
        "tflops_per_s": round(flops / seconds / 1e12, 3) if seconds > 0 else None,
        "mfu": round(flops / seconds / peak_flops, 4) if seconds > 0 and peak_flops else None,
        "attention_flops_share": round(attention / (flops + attention), 4) if flops else None,
        "mfu_with_attention": (round((flops + attention) / seconds / peak_flops, 4)
                               if seconds > 0 and peak_flops else None),
        "losses": loss_values,
        "loss_finite": all(math.isfinite(x) for x in loss_values),
    }
    row["ok"] = row["loss_finite"] and bool(row["tokens_per_s"])
    return row


def with_oom_retry(run: Callable[[int], dict[str, Any]], micro_batch: int, optimizer: torch.optim.Optimizer,
                   device: torch.device) -> dict[str, Any]:
    """`run(micro_batch)`, halving the micro-batch after a CUDA out-of-memory error (down to 1)."""
    retries = 0
    while True:
        try:
            row = run(micro_batch)
            row["oom_retries"] = retries
            return row
        except torch.cuda.OutOfMemoryError:
            if micro_batch == 1:
                raise
        # Outside the except block: the traceback (and the tensors its frames hold) is gone by now.
        optimizer.zero_grad(set_to_none=True)
        free_memory(device)
        retries += 1
        micro_batch //= 2
        log(f"out of memory: retrying with micro-batch {micro_batch}")


@torch.no_grad()
def generation_section(model: torch.nn.Module, shapes: Shapes, device: torch.device, vocab: int,
                       generator: torch.Generator) -> dict[str, Any]:
    """Greedy `model.generate` with bf16 weights; end-of-sequence suppressed so every row decodes in full."""
    model.to(torch.bfloat16)
    model.eval()
    prompts = torch.randint(1, vocab, (shapes.gen_batch, shapes.gen_prompt_tokens), generator=generator).to(device)
    mask = torch.ones_like(prompts)

    def generate(new: int) -> torch.Tensor:
        return model.generate(input_ids=prompts, attention_mask=mask, max_new_tokens=new,  # type: ignore[operator]
                              min_new_tokens=new, do_sample=False, pad_token_id=PAD_ID)

    generate(min(4, shapes.gen_new_tokens))  # warm-up: kernels, cache allocation
    synchronize(device)
    start = time.perf_counter()
    out = generate(shapes.gen_new_tokens)
    synchronize(device)
    seconds = time.perf_counter() - start
    new_tokens = (out.shape[1] - prompts.shape[1]) * out.shape[0]
    return {
        "batch": shapes.gen_batch,
        "prompt_tokens": shapes.gen_prompt_tokens,
        "new_tokens_per_row": out.shape[1] - prompts.shape[1],
        "weights_dtype": "bfloat16",
        "decoding": "greedy, transformers model.generate, dynamic KV cache",
        "seconds": round(seconds, 3),
        "tokens_per_s": round(new_tokens / seconds, 1) if seconds > 0 else None,
        "ok": new_tokens == shapes.gen_batch * shapes.gen_new_tokens and seconds > 0,
    }


# ---------------------------------------------------------------- the whole check


def versions() -> dict[str, Any]:
    import importlib.metadata as md

    out: dict[str, Any] = {"python": sys.version.split()[0]}
    for name in ALLOWED_PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    out["cuda"] = torch.version.cuda
    return out


def device_info(device: torch.device, peak_tflops: float | None) -> dict[str, Any]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        table = accounting.peak_flops_for(name)
        total = torch.cuda.get_device_properties(device).total_memory
        info: dict[str, Any] = {"type": "cuda", "name": name, "memory_gib": round(total / 2**30, 1),
                                "count": torch.cuda.device_count()}
    else:
        table = None
        info = {"type": device.type, "name": f"{device.type} ({os.cpu_count()} cores)"}
    peak = peak_tflops * 1e12 if peak_tflops else table
    info["peak_bf16_flops"] = peak
    info["peak_source"] = ("--peak-tflops" if peak_tflops else
                           "harness.training.accounting.GPU_PEAK_FLOPS (dense bf16, data sheet)" if table else None)
    return info


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    shapes = TINY if args.tiny else FULL
    if args.max_length or args.max_prompt_length:
        shapes = replace(shapes, max_length=args.max_length or shapes.max_length,
                         max_prompt_length=args.max_prompt_length or shapes.max_prompt_length)
    if args.micro_batch:
        shapes = replace(shapes, pad_micro_batch=args.micro_batch, dpo_micro_batch=2 * args.micro_batch)
    config_kwargs = TINY_LLAMA if args.tiny else LLAMA_3_2_1B
    vocab = int(config_kwargs["vocab_size"])
    clock = Clock(args.budget_s)
    generator = torch.Generator().manual_seed(0)
    table: dict[str, Any] = {
        "check": "pad-harness GPU check (tests/gpu/check.py)",
        "mode": "tiny" if args.tiny else "full",
        "versions": versions(),
        "device": device_info(device, args.peak_tflops),
        "model": None,  # filled in by the build section
        "shapes": asdict(shapes),
        "summary": None,
        "rows": [],
        "notes": [
            "tokens_per_s: tokens the model runs (shared prompts count once per group), as the trainer counts",
            "mfu: 6 * params * tokens / (time * peak), attention's sequence-length FLOPs not counted (as the "
            "trainer's accounting); mfu_with_attention adds 12 * layers * heads * head_dim per allowed (q, k) pair",
            "step time covers packing, host-to-device copy, forward, backward, clip and the AdamW step",
        ],
    }
    elapsed = {"imports": round(time.perf_counter() - START, 2)}
    table["elapsed_s"] = elapsed
    rows: list[dict[str, Any]] = table["rows"]

    def section(name: str, fn: Callable[[float], dict[str, Any]]) -> dict[str, Any] | None:
        if clock.left() < 10:
            rows.append({"section": name, "ok": False, "status": "skipped: the time budget is spent"})
            log(f"{name}: skipped (time budget)")
            return None
        log(f"{name} ...")
        reset_peak_memory(device)
        start = time.perf_counter()
        try:
            row = {"section": name, **fn(clock.section_deadline(name))}
            synchronize(device)
        except Exception as error:  # reported in the table; the next sections still run
            traceback.print_exc()
            row = {"section": name, "ok": False, "status": f"error: {type(error).__name__}: {error}"[:500]}
        free_memory(device)  # an error's tensors are released once its traceback is
        row.update(peak_memory(device))
        row["elapsed_s"] = elapsed[name] = round(time.perf_counter() - start, 2)
        row.setdefault("status", "ok" if row.get("ok") else "failed")
        rows.append(row)
        log(f"{name}: {json.dumps({k: v for k, v in row.items() if k != 'losses'})}")
        return row

    holder: dict[str, Any] = {}

    def build(_: float) -> dict[str, Any]:
        model = build_model(config_kwargs, device)
        set_activation_checkpointing(model, args.gradient_checkpointing)
        model.train()
        holder["model"] = model
        n = accounting.count_params(model)
        holder["params"] = n
        attn = getattr(model.config, "_attn_implementation", None)
        table["model"] = {
            "shape": "tiny Llama (2 layers, hidden 64)" if args.tiny else "Llama-3.2-1B",
            "source": LLAMA_3_2_1B_SOURCE, "init": "random (LlamaConfig, seed 0), no download",
            "config": {k: v for k, v in config_kwargs.items() if k not in ("bos_token_id", "eos_token_id")},
            "params": n, "attn_implementation": attn, "shares_prompts": shares_prompts(model),
            "gradient_checkpointing": args.gradient_checkpointing,
        }
        return {"params": n, "ok": shares_prompts(model)}

    section("build", build)
    model = holder.get("model")
    if model is None or not (table["model"] or {}).get("shares_prompts"):
        table["ok"] = False
        elapsed["total"] = round(time.perf_counter() - START, 2)
        table["summary"] = summary(table)
        return table
    params = int(holder["params"])
    peak_flops = table["device"]["peak_bf16_flops"]

    def master(_: float) -> dict[str, Any]:
        row, holder["optimizer"] = master_weights_section(model, shapes, device, vocab, generator)
        return row

    section("master_weights", master)
    if "optimizer" not in holder:  # the master-weights section did not finish: the trainer's set-up still
        precision.fp32_master_weights(model)
        precision.disable_dropout(model)
        holder["optimizer"] = adamw(list(model.parameters()), LEARNING_RATE)

    def train(name: str, micro_batch: int, deadline: float) -> dict[str, Any]:
        optimizer = holder["optimizer"]
        return with_oom_retry(lambda mb: training_section(name, model, optimizer, shapes, mb, device, vocab, params,
                                                          peak_flops, deadline, generator),
                              micro_batch, optimizer, device)

    section("pad", lambda deadline: train("pad", shapes.pad_micro_batch, deadline))
    section("dpo", lambda deadline: train("dpo", shapes.dpo_micro_batch, deadline))
    del holder["optimizer"]  # AdamW's moments: generation needs the memory
    free_memory(device)
    set_activation_checkpointing(model, False)
    section("generation", lambda _: generation_section(model, shapes, device, vocab, generator))
    if device.type == "cuda":
        table["device"]["max_allocated_gib_whole_run"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    elapsed["total"] = round(time.perf_counter() - START, 2)
    table["ok"] = all(row.get("ok") for row in rows) and len(rows) == len(SECTION_CAPS_S)
    table["summary"] = summary(table)
    return table


def summary(table: dict[str, Any]) -> dict[str, Any]:
    """The figures docs/performance.md records, one line."""
    by = {row["section"]: row for row in table["rows"]}
    out: dict[str, Any] = {"device": table["device"]["name"], "ok": table["ok"]}
    for name in ("pad", "dpo"):
        for key in ("tokens_per_s", "mfu", "peak_memory_gib"):
            out[f"{name}_{key}"] = by.get(name, {}).get(key)
    master = by.get("master_weights", {})
    out["fp32_master_moved_fraction"] = master.get("fp32_master_moved_fraction")
    out["bf16_adamw_moved_fraction"] = master.get("bf16_adamw_moved_fraction")
    out["generation_tokens_per_s"] = by.get("generation", {}).get("tokens_per_s")
    out["total_s"] = table["elapsed_s"].get("total")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--device", default=None, help="cuda (default when a GPU is present), cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="a tiny Llama and tiny shapes (the CPU smoke mode)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="the whole check's time budget (8 min)")
    parser.add_argument("--micro-batch", type=int, default=0, help="PAD prompts per micro-batch (DPO: twice)")
    parser.add_argument("--max-length", type=int, default=0)
    parser.add_argument("--max-prompt-length", type=int, default=0)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak when not in the table")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(args.device).type != "cuda" and not args.tiny:
        parser.error("no GPU here: the full check trains a 1.2B model; run `--device cpu --tiny` for the smoke mode")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    table = run(args)
    text = json.dumps(table, indent=1)
    print(text, flush=True)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    log(f"done: ok={table['ok']}")
    return 0 if table["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
