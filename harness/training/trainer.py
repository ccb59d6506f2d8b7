"""The one training loop. Every method trains here, under the same budget, knowing methods only
through the `Method` interface (build_examples -> collate -> loss).

    plan   = budget -> optimizer steps and the prompts of each step (a pure function of seed and step)
    resume = latest checkpoint in work_dir, if any (model, optimizer, RNG, log rows, accounting)
    for step in plan:
        collate the step's micro-batches; stop if a token/FLOP cap would be exceeded
        forward/backward each micro-batch (gradient accumulation; the gradient is the mean over the
        effective batch), clip, set the LR, AdamW step
        log a row; checkpoint every `checkpoint_every` steps
    write out_dir/model.safetensors + config.json, metrics.jsonl, accounting.json

`accelerate` handles device placement, mixed precision (bf16 autocast on GPU, fp32 on CPU) and, under
`accelerate launch`, DDP / FSDP / DeepSpeed (see docs/multi-gpu.md).

Master weights are fp32 and dropout is off whatever the student was loaded as (harness.training.precision).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from harness.config import Budget, LoggingConfig
from harness.console import bars_enabled
from harness.diskspace import require_free
from harness.errors import BudgetError, HarnessError
from harness.methods.base import Method, PromptGroup, TrainContext
from harness.methods.shared_prompt import shares_prompts
from harness.models.base import LoadedModel
from harness.store import hash_inputs, write_json_atomic, write_jsonl
from harness.training import checkpoint as ckpt
from harness.training.accounting import Accounting, count_params, detect_device
from harness.training.budget import (
    cap_stop_reason,
    check_method_fits,
    check_step_fits,
    plan_training,
)
from harness.training.checkpoint import load_trained_weights, read_accounting  # noqa: F401 (public API)
from harness.training.logging import MetricsLogger
from harness.training.precision import (
    allow_precision,
    disable_dropout,
    fp32_master_weights,
    resolve_mixed_precision,
)
from harness.training.schedule import lr_multiplier

RESERVED_KEYS = {"step", "epoch", "loss", "lr", "grad_norm", "tokens", "tokens_total", "prompts_seen", "time_s",
                 "wall_s", "tokens_per_s"}


@dataclass
class TrainResult:
    accounting: dict[str, Any]
    log_rows: list[dict[str, Any]]
    plan: dict[str, Any]
    stop_reason: str
    completed: bool  # False when `stop_after_steps` ended the call early (outputs not written)
    resumed_from_step: int | None
    out_dir: Path
    model_path: Path | None = None
    metrics_path: Path | None = None
    accounting_path: Path | None = None
    messages: list[str] = field(default_factory=list)  # e.g. a requested logging backend is missing


def make_accelerator(budget: Budget, accumulation_steps: int = 1, load_dtype: torch.dtype | None = None) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, GradientAccumulationPlugin

    precision = resolve_mixed_precision(budget.mixed_precision, load_dtype)
    allow_precision(precision)
    # An explicit plugin: the budget decides accumulation, not an ACCELERATE_* environment variable, and
    # there is no prepared dataloader whose end should force a sync.
    plugin = GradientAccumulationPlugin(num_steps=accumulation_steps, sync_with_dataloader=False)
    accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_plugin=plugin)
    if accelerator.distributed_type == DistributedType.DEEPSPEED and (
        accelerator.gradient_accumulation_steps != accumulation_steps
    ):
        raise BudgetError(
            f"the DeepSpeed config accumulates {accelerator.gradient_accumulation_steps} micro-batches but the "
            f"budget needs {accumulation_steps} (effective_batch / (micro_batch x processes)); set "
            f"deepspeed_config.gradient_accumulation_steps: {accumulation_steps} in the accelerate config"
        )
    return accelerator


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    if hasattr(obj, "to") and not isinstance(obj, (str, torch.nn.Module)):
        return obj.to(device)  # e.g. harness.methods.common.Packed
    return obj


def _student_tokens(method: Method, batch: dict[str, Any]) -> int:
    if "student_tokens" not in batch:
        raise HarnessError(f"method {method.name!r}: collate() must set batch['student_tokens'] (the tokens the "
                           f"student processes) so that every method is accounted the same way")
    return int(batch["student_tokens"])


def _optimizer(model: torch.nn.Module, budget: Budget) -> torch.optim.Optimizer:
    # No weight decay on biases and norm gains (the usual practice; 1-D tensors).
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": budget.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # foreach=False: one code path on every device keeps resumed and uninterrupted runs bitwise equal.
    return torch.optim.AdamW(groups, lr=budget.learning_rate, betas=(0.9, 0.999), eps=1e-8, foreach=False)


def _set_activation_checkpointing(model: Any, on: bool) -> None:
    # transformers 5 renamed gradient_* to activation_checkpointing_*; support both (metadata allows >=4.45).
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def _counting_loader(loader: Any, holder: dict[str, Any]) -> Any:
    """Wrap the lazy teacher loader so that an on-policy run learns the teacher's size for its FLOPs."""
    if loader is None:
        return None

    def load() -> Any:
        teacher = loader()
        holder["ctx"].accounting.teacher_params = count_params(teacher.model)
        return teacher

    return load


def _fingerprint(method: Method, groups: list[PromptGroup], budget: Budget, seed: int, processes: int) -> str:
    """What a checkpoint must match to be resumed (how checkpoints are stored may change between calls)."""
    params = method.params.model_dump(mode="json") if hasattr(method.params, "model_dump") else {}
    return hash_inputs({"method": method.name, "params": params, "seed": seed, "processes": processes,
                        "budget": budget.result_inputs(),
                        "prompts": [g.prompt_id for g in groups]})


def _reduce_sums(accelerator: Any, values: dict[str, float]) -> dict[str, float]:
    """Sum per-process numbers over processes (a no-op in a single process)."""
    if accelerator.num_processes == 1:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], device=accelerator.device, dtype=torch.float64)
    tensor = accelerator.reduce(tensor, reduction="sum")
    return dict(zip(keys, tensor.tolist(), strict=True))


def train(
    method: Method,
    groups: list[PromptGroup],
    student: LoadedModel,
    budget: Budget,
    seed: int,
    work_dir: Path,
    out_dir: Path,
    *,
    logging: LoggingConfig | None = None,
    precompute_accounting: dict[str, Any] | None = None,
    teacher_loader: Any = None,
    generator: Any = None,
    stop_after_steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train `student.model` in place with `method` under `budget`; resume from work_dir if possible.

    `stop_after_steps=k` simulates a kill once global optimizer step k is done: the call returns
    (completed=False) leaving only the regular checkpoints, as a real kill would.
    """
    started = time.perf_counter()
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, parse_flag_from_env, set_seed

    # Data-parallel on CPUs (torchrun with ACCELERATE_USE_CPU=1, gloo): the first state made decides, and
    # without cpu=True accelerate ignores torchrun's environment and runs every process alone.
    processes = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).num_processes
    plan = plan_training(budget, len(groups), seed, processes)
    model = student.model
    load_dtype = fp32_master_weights(model)  # before the optimizer exists: it must hold the fp32 copies
    disable_dropout(model)
    accelerator = make_accelerator(budget, plan.accumulation_steps, load_dtype)
    if method.on_policy and generator is None:
        raise BudgetError(f"method {method.name!r} samples from the student during training (on-policy) but "
                          f"no generator was given to the trainer")

    set_seed(seed)  # python, numpy, torch: initialisation noise of anything a method creates
    examples = method.build_examples(groups, random.Random(seed))
    prompt_lengths = [len(student.formatter.prompt_ids(g.messages)) for g in groups]
    scaffold = len(student.formatter.prompt_ids([{"role": "user", "content": ""}]))
    fit_info = check_method_fits(method.name, len(groups), examples, prompt_lengths, budget, scaffold)

    model.train()
    if budget.gradient_checkpointing:
        _set_activation_checkpointing(model, True)
        if getattr(model.config, "use_cache", None):
            model.config.use_cache = False  # the KV cache is useless in training and clashes with recompute

    accounting = Accounting(student_params=count_params(model),
                            **detect_device(accelerator.device, accelerator.num_processes))
    accounting.add_precompute(precompute_accounting)
    accounting.extra.update(fit_info)
    method_rng = random.Random(seed + 1)
    holder: dict[str, Any] = {}  # the loader must reach ctx.accounting, which a resume replaces
    ctx = TrainContext(formatter=student.formatter, max_length=budget.max_length,
                       max_prompt_length=budget.max_prompt_length, share_prompts=shares_prompts(model),
                       accounting=accounting,
                       teacher_loader=_counting_loader(teacher_loader, holder), generator=generator, rng=method_rng)
    holder["ctx"] = ctx
    fingerprint = _fingerprint(method, groups, budget, seed, processes)

    # --- resume ------------------------------------------------------------------------------
    ckpt.clean_partial(work_dir)
    latest = ckpt.latest_checkpoint(work_dir)
    saved: dict[str, Any] | None = None
    if latest is not None:
        saved = ckpt.load_checkpoint(latest)
        if saved["trainer"]["fingerprint"] != fingerprint:
            raise HarnessError(f"checkpoint {latest} belongs to a different run (method, budget, seed or "
                               f"prompts changed); delete {ckpt.checkpoint_root(work_dir)} to start over")
        model.load_state_dict(saved["model"])  # before prepare, so sharding wrappers see the restored weights

    if accelerator.is_main_process:  # fail before training, not after it, when its outputs cannot be written
        needed, at_once = ckpt.bytes_needed(model, budget.checkpoint_every,
                                            plan.total_steps - (saved["step"] if saved else 0))
        require_free(work_dir, needed, f"training {method.name!r} (the trained model and {at_once} "
                                       f"checkpoint(s) of weights + optimizer state)")
    optimizer = _optimizer(model, budget)
    model, optimizer = accelerator.prepare(model, optimizer)
    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(accelerator.device)

    # FSDP / DeepSpeed shard the optimizer state across processes; one process's state_dict() is not the
    # whole of it. Checkpoints then keep the gathered weights but no optimizer moments (said on resume).
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    resume_notes: list[str] = []
    start_step = 0
    rows: list[dict[str, Any]] = []
    if saved is not None:
        if saved["optimizer"]["state"] or not sharded:
            optimizer.load_state_dict(saved["optimizer"])
        else:
            resume_notes.append(f"resumed from step {saved['step']} without optimizer moments (sharded "
                                f"training keeps them per process): the run is not bitwise exact")
        ckpt.rng_from_files(saved["rng_tensors"], saved["rng"], method_rng)
        start_step = saved["step"]
        rows = saved["trainer"]["log_rows"]
        previous = Accounting.from_dict(saved["trainer"]["accounting"])
        # Counters continue from the checkpoint; this process's device facts win.
        for name in ("device_name", "num_processes", "peak_flops_per_device", "peak_memory_kind", "extra"):
            setattr(previous, name, getattr(accounting, name))
        accounting = previous
        ctx.accounting = accounting
        del saved

    is_main = accelerator.is_main_process
    logger = MetricsLogger(work_dir / "metrics.jsonl", logging, run_name=f"{method.name}-seed{seed}",
                           run_config={"method": method.name, "seed": seed, "plan": plan.to_dict()},
                           enabled=is_main)
    logger.restart(rows)
    for note in resume_notes:
        logger.note(note)

    def save(step_done: int) -> None:
        state = accelerator.get_state_dict(model)  # collective under FSDP / ZeRO-3: every process calls it
        if is_main:
            snapshot = accounting.to_dict()
            snapshot["wall_time_s"] += time.perf_counter() - started  # this call's time so far counts too
            trainer_state = {"fingerprint": fingerprint, "log_rows": rows, "accounting": snapshot,
                             "plan": plan.to_dict()}
            opt_state = {"state": {}, "param_groups": []} if sharded else optimizer.state_dict()
            ckpt.save_checkpoint(work_dir, step_done, state, opt_state, method_rng, trainer_state)
        accelerator.wait_for_everyone()

    # --- the loop ----------------------------------------------------------------------------
    bar = tqdm(total=plan.total_steps, initial=start_step, desc=f"train {method.name}",
               disable=not (progress and is_main and bars_enabled()), dynamic_ncols=True)
    max_norm = budget.max_grad_norm if budget.max_grad_norm is not None else float("inf")
    stop_reason = plan.steps_from
    for step in range(start_step, plan.total_steps):
        if stop_after_steps is not None and step >= stop_after_steps:
            stop_reason = "stop_after_steps"
            break
        ctx.step = step
        step_start = time.perf_counter()  # collation is part of the step's cost
        micro_indices = plan.micro_batches(step, accelerator.process_index)
        batches = [method.collate([examples[i] for i in idx], ctx) for idx in micro_indices]
        planned_tokens = int(_reduce_sums(accelerator, {"t": sum(_student_tokens(method, b) for b in batches)})["t"])
        if step == 0:
            check_step_fits(method.name, planned_tokens, accounting.student_params, budget)
        capped = cap_stop_reason(budget, accounting.student_backward_tokens, accounting.training_flops,
                                 planned_tokens, accounting.student_params)
        if capped:
            stop_reason = capped
            break

        lr = budget.learning_rate * lr_multiplier(step, plan.total_steps, plan.warmup_steps, budget.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sums: dict[str, float] = {"loss": 0.0, "examples": 0.0, "tokens": 0.0}
        grad_norm = float("nan")
        loss_sum = torch.zeros((), device=accelerator.device)  # summed on device: one sync per step, not per micro
        for idx, batch in zip(micro_indices, batches, strict=True):
            batch = _to_device(batch, accelerator.device)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    out = method.loss(model, batch, ctx)
                # The method returns the mean over its micro-batch; accelerate divides by the number of
                # micro-batches, so the summed gradient is the mean over the effective batch.
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    norm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
                    grad_norm = float(norm) if norm is not None else float("nan")  # DeepSpeed clips itself
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            n = len(idx)
            loss_sum += out.loss.detach().float() * n
            sums["examples"] += n
            sums["tokens"] += _student_tokens(method, batch)  # re-read: on-policy methods may update it
            for key, value in out.metrics.items():
                sums[f"m:{key}"] = sums.get(f"m:{key}", 0.0) + float(value) * n
        if not accelerator.sync_gradients:
            raise RuntimeError("gradient accumulation out of step: optimizer step did not synchronise")
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize(accelerator.device)  # honest step time
        sums["loss"] = float(loss_sum)
        step_time = time.perf_counter() - step_start

        totals = _reduce_sums(accelerator, sums)
        step_tokens = int(totals["tokens"])
        accounting.add_student_train(step_tokens)
        accounting.optimizer_steps += 1
        accounting.micro_batches += len(micro_indices) * accelerator.num_processes
        accounting.prompts_seen += int(totals["examples"])
        accounting.train_time_s += step_time
        accounting.update_peak_memory(accelerator.device)
        row: dict[str, Any] = {
            "step": step + 1,
            "epoch": round((step + 1) / plan.steps_per_epoch, 6),
            "loss": totals["loss"] / totals["examples"],
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens": step_tokens,
            "tokens_total": accounting.student_backward_tokens,
            "prompts_seen": accounting.prompts_seen,
            "time_s": round(accounting.train_time_s, 6),
            "wall_s": round(time.perf_counter() - started, 6),  # since this call began (not across resumes)
            "tokens_per_s": step_tokens / step_time if step_time > 0 else None,
        }
        for key, value in totals.items():
            if key.startswith("m:"):
                name = key[2:]
                row[name if name not in RESERVED_KEYS else f"method_{name}"] = value / totals["examples"]
        rows.append(row)
        logger.log(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s'] or 0:.0f}")

        done = step + 1
        if budget.checkpoint_every and done % budget.checkpoint_every == 0 and done < plan.total_steps:
            save(done)
    bar.close()
    accounting.stop_reason = stop_reason
    if budget.checkpoint_every and stop_reason != "stop_after_steps" and accounting.optimizer_steps > start_step:
        save(accounting.optimizer_steps)  # the end state: a rerun after a crash below starts here
    accounting.wall_time_s += time.perf_counter() - started

    result = TrainResult(accounting=accounting.to_dict(), log_rows=rows, plan=plan.to_dict(),
                         stop_reason=stop_reason, completed=stop_reason != "stop_after_steps",
                         resumed_from_step=start_step or None, out_dir=out_dir, messages=logger.messages)
    if not result.completed:
        logger.close()
        return result

    # --- outputs -----------------------------------------------------------------------------
    unwrapped = accelerator.unwrap_model(model)
    state = accelerator.get_state_dict(model)
    if budget.gradient_checkpointing:
        _set_activation_checkpointing(unwrapped, False)
    unwrapped.eval()
    result.accounting = accounting.to_dict()
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        # fp32 on disk: the master weights (a DeepSpeed bf16 engine gathers bf16 module weights; they are
        # stored upcast, see docs/multi-gpu.md).
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        unwrapped.save_pretrained(out_dir, state_dict=state, max_shard_size="1000GB")
        write_jsonl(out_dir / "metrics.jsonl", rows)
        write_json_atomic(out_dir / "accounting.json", {**result.accounting, "plan": plan.to_dict()})
    accelerator.wait_for_everyone()
    logger.close()
    result.model_path = out_dir / "model.safetensors"
    result.metrics_path = out_dir / "metrics.jsonl"
    result.accounting_path = out_dir / "accounting.json"
    return result
