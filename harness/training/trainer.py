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

`train()` builds a `Trainer` and runs it: `setup` (accelerator, plan and LR schedule, data, accounting),
`resume` (checkpoint weights, then optimizer + accelerate.prepare, then optimizer state, RNG, rows,
accounting), `step` per optimizer step, `checkpoint`, `finish` (outputs). The run's state lives on it.

Around it: harness.training.distributed (accelerate: devices, mixed precision, DDP / FSDP / DeepSpeed),
harness.training.resume (checkpoints read and written), harness.training.records (accounting, log rows).

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

import harness.training.checkpoint as ckpt
from harness.config import Budget, LoggingConfig, LoraSpec
from harness.console import bars_enabled
from harness.errors import BudgetError
from harness.methods.base import Method, PromptGroup, TrainContext
from harness.methods.shared_prompt import shares_prompts
from harness.models.base import LoadedModel
from harness.store import write_json_atomic, write_jsonl
from harness.training.accounting import Accounting, count_params, detect_device
from harness.training.budget import (
    cap_stop_reason,
    check_method_fits,
    check_step_fits,
    plan_training,
    truncation_counts,
)
from harness.training.checkpoint import load_trained_weights, read_accounting
from harness.training.distributed import (
    is_sharded,
    launch_processes,
    make_accelerator,
    reduce_sums,
    to_device,
)
from harness.training.logging import MetricsLogger
from harness.training.lora import adapter_state, attach_lora, load_adapter_state, merged_model, save_adapter
from harness.training.precision import disable_dropout, fp32_master_weights
from harness.training.records import RESERVED_KEYS, counting_loader, record_step, step_row, student_tokens
from harness.training.resume import (
    read_checkpoint,
    require_room,
    resumed_accounting,
    run_fingerprint,
    trainer_state,
)
from harness.training.schedule import lr_multiplier
from harness.training.solo import SoloAccelerator

__all__ = ["RESERVED_KEYS", "TrainResult", "Trainer", "load_trained_weights", "make_accelerator", "read_accounting",
           "train"]


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


class Trainer:
    """One training run: `run()` = `setup()`, `resume()`, `step()` per optimizer step (with `checkpoint()`
    every `checkpoint_every` steps), `finish()`. The arguments are those of `train()`; the run's state
    (accelerator, plan, model, optimizer, accounting, log rows, ...) lives on the instance."""

    def __init__(self, method: Method, groups: list[PromptGroup], student: LoadedModel, budget: Budget,
                 seed: int, work_dir: Path, out_dir: Path, *, logging: LoggingConfig | None = None,
                 precompute_accounting: dict[str, Any] | None = None, teacher_loader: Any = None,
                 generator: Any = None, stop_after_steps: int | None = None, progress: bool = True,
                 solo: bool = False, run_name: str | None = None, lora: LoraSpec | None = None,
                 merge_base: Any = None) -> None:
        self.started = time.perf_counter()  # this call's wall time (not across resumes)
        self.method, self.groups, self.student, self.budget, self.seed = method, groups, student, budget, seed
        self.work_dir, self.out_dir = Path(work_dir), Path(out_dir)
        self.logging_config = logging
        self.run_name = run_name  # the row's label in the training logs (harness.tracking.names)
        self.precompute_accounting = precompute_accounting
        self.teacher_loader = teacher_loader
        self.generator = generator
        self.stop_after_steps = stop_after_steps
        self.progress = progress
        self.lora = lora  # train adapters on a frozen base (harness.training.lora)
        self.merge_base = merge_base  # () -> an unquantized copy of the base, to merge a quantized base's adapters
        self.solo = solo  # alone in a launch (a tuning trial): harness.training.solo
        self.start_step = 0  # a resumed run starts at its checkpoint's step
        self.rows: list[dict[str, Any]] = []  # one per optimizer step done, restored on resume
        self.resume_notes: list[str] = []
        self.stop_reason = ""

    def run(self) -> TrainResult:
        self.setup()
        self.resume()
        self._open_logger()
        self._train_steps()
        return self.finish()

    # --- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        """Accelerator, plan (steps and LR schedule), data, accounting and the methods' context."""
        from accelerate.utils import set_seed

        method, budget = self.method, self.budget
        self.processes = 1 if self.solo else launch_processes()
        self.plan = plan_training(budget, len(self.groups), self.seed, self.processes)
        self.max_norm = budget.max_grad_norm if budget.max_grad_norm is not None else float("inf")
        self.model = self.student.model  # accelerate's wrapper once prepared (resume)
        self.base_params = count_params(self.model)
        if self.lora is None:
            load_dtype = fp32_master_weights(self.model)  # before the optimizer exists: it must hold fp32 copies
            disable_dropout(self.model)
        else:  # the base stays frozen in its load dtype; the fp32 adapters are the master weights
            load_dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), None)
            disable_dropout(self.model)  # before the adapters: their own `dropout` is the user's setting
            set_seed(self.seed)  # the adapters' initial A
            self.model = attach_lora(self.model, self.lora)
        self.accelerator = (SoloAccelerator(budget.mixed_precision, self.plan.accumulation_steps, load_dtype)
                            if self.solo else make_accelerator(budget, self.plan.accumulation_steps, load_dtype))
        if method.on_policy and self.generator is None:
            raise BudgetError(f"method {method.name!r} samples from the student during training (on-policy) but "
                              f"no generator was given to the trainer")

        set_seed(self.seed)  # python, numpy, torch: initialisation noise of anything a method creates
        fit_info = self._setup_data()
        self.model.train()
        if budget.gradient_checkpointing:
            _set_activation_checkpointing(self.model, True)
            if getattr(self.model.config, "use_cache", None):
                self.model.config.use_cache = False  # no KV cache in training: it clashes with recompute
        self._setup_accounting(fit_info)

    def _setup_data(self) -> dict[str, int]:
        """The method's examples (one per prompt) and the checks that need them; returns manifest counters."""
        formatter, groups = self.student.formatter, self.groups
        self.examples = self.method.build_examples(groups, random.Random(self.seed))
        prompt_lengths = [len(formatter.prompt_ids(g.messages)) for g in groups]
        scaffold = len(formatter.prompt_ids([{"role": "user", "content": ""}]))
        info = check_method_fits(self.method.name, len(groups), self.examples, prompt_lengths, self.budget,
                                 scaffold)
        if self.budget.truncation == "group_as_released":  # a prompt is cut only with its group: count exactly
            response_lengths = [[len(formatter.response_ids(r, finished=done))
                                 for r, done in zip(g.responses, g.finished_flags(), strict=True)] for g in groups]
            info.update(truncation_counts(prompt_lengths, response_lengths, self.budget))
        return info

    def _setup_accounting(self, fit_info: dict[str, int]) -> None:
        budget, accelerator = self.budget, self.accelerator
        self.accounting = Accounting(student_params=self.base_params,
                                     **detect_device(accelerator.device, accelerator.num_processes))
        self.accounting.add_precompute(self.precompute_accounting)
        self.accounting.extra.update(fit_info)
        if self.lora is not None:  # FLOPs count the frozen base's forward and activation gradients only
            self.accounting.student_trainable_params = sum(p.numel() for p in self.model.parameters()
                                                           if p.requires_grad)
        self.method_rng = random.Random(self.seed + 1)
        self.ctx = TrainContext(formatter=self.student.formatter, max_length=budget.max_length,
                                max_prompt_length=budget.max_prompt_length,
                                share_prompts=shares_prompts(self.model), truncation=budget.truncation,
                                accounting=self.accounting,
                                generator=self.generator, rng=self.method_rng)
        # Set once ctx exists: the loader counts into ctx.accounting, which a resume replaces.
        self.ctx.teacher_loader = counting_loader(self.teacher_loader, self.ctx)
        self.fingerprint = run_fingerprint(self.method, self.groups, budget, self.seed, self.processes)

    # --- resume ------------------------------------------------------------------------------
    def resume(self) -> None:
        """Continue from the latest checkpoint in work_dir, if any. Its weights go in before accelerate wraps
        the model (so sharding wrappers see them), hence the optimizer is built and prepared here, between
        the weights and the rest: optimizer state, RNG, log rows and accounting."""
        saved = read_checkpoint(self.work_dir, self.fingerprint, self.model,
                                load=load_adapter_state if self.lora is not None else None)
        self._setup_optimizer(saved["step"] if saved is not None else 0)
        if saved is not None:
            self._restore(saved)

    def _setup_optimizer(self, steps_done: int) -> None:
        accelerator, budget = self.accelerator, self.budget
        if accelerator.is_main_process:
            require_room(self.work_dir, self.model, budget, self.plan.total_steps - steps_done, self.method.name)
        optimizer = _optimizer(self.model, budget)
        self.model, self.optimizer = accelerator.prepare(self.model, optimizer)
        if accelerator.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(accelerator.device)
        # FSDP / DeepSpeed shard the optimizer state across processes; one process's state_dict() is not the
        # whole of it. Checkpoints then keep the gathered weights but no optimizer moments (said on resume).
        self.sharded = is_sharded(accelerator)

    def _restore(self, saved: dict[str, Any]) -> None:
        if saved["optimizer"]["state"] or not self.sharded:
            self.optimizer.load_state_dict(saved["optimizer"])
        else:
            self.resume_notes.append(f"resumed from step {saved['step']} without optimizer moments (sharded "
                                     f"training keeps them per process): the run is not bitwise exact")
        ckpt.rng_from_files(saved["rng_tensors"], saved["rng"], self.method_rng)
        self.start_step = saved["step"]
        self.rows = saved["trainer"]["log_rows"]
        self.accounting = self.ctx.accounting = resumed_accounting(saved, self.accounting)

    def _open_logger(self) -> None:
        method, seed = self.method, self.seed
        self.is_main = self.accelerator.is_main_process
        self.logger = MetricsLogger(self.work_dir / "metrics.jsonl", self.logging_config,
                                    run_name=self.run_name or f"{method.name}-seed{seed}",
                                    run_config={"method": method.name, "seed": seed,
                                                "plan": self.plan.to_dict()},
                                    enabled=self.is_main)
        self.logger.restart(self.rows)
        for note in self.resume_notes:
            self.logger.note(note)

    # --- the loop ----------------------------------------------------------------------------
    def _train_steps(self) -> None:
        """Every planned step from `start_step` on, until the plan ends, a cap or `stop_after_steps`."""
        plan, budget = self.plan, self.budget
        self.bar = tqdm(total=plan.total_steps, initial=self.start_step, desc=f"train {self.method.name}",
                        disable=not (self.progress and self.is_main and bars_enabled()), dynamic_ncols=True)
        self.stop_reason = plan.steps_from
        for step in range(self.start_step, plan.total_steps):
            if self.stop_after_steps is not None and step >= self.stop_after_steps:
                self.stop_reason = "stop_after_steps"
                break
            capped = self.step(step)
            if capped:
                self.stop_reason = capped
                break
            done = step + 1
            if budget.checkpoint_every and done % budget.checkpoint_every == 0 and done < plan.total_steps:
                self.checkpoint(done)
        self.bar.close()

    def step(self, step: int) -> str | None:
        """Optimizer step `step` (0-based): collate its micro-batches, stop (returning why) if a token/FLOP cap
        would be exceeded, else set the LR, forward/backward/clip/AdamW, account and log a row."""
        method, budget, plan, accelerator, accounting = (self.method, self.budget, self.plan, self.accelerator,
                                                         self.accounting)
        self.ctx.step = step
        step_start = time.perf_counter()  # collation is part of the step's cost
        micro_indices = plan.micro_batches(step, accelerator.process_index)
        batches = [method.collate([self.examples[i] for i in idx], self.ctx) for idx in micro_indices]
        planned = sum(student_tokens(method, b) for b in batches)
        planned_tokens = int(reduce_sums(accelerator, {"t": planned})["t"])
        if step == 0:
            check_step_fits(method.name, planned_tokens, accounting.student_params, budget,
                            accounting.student_trainable_params)
        capped = cap_stop_reason(budget, accounting.student_backward_tokens, accounting.training_flops,
                                 planned_tokens, accounting.student_params, accounting.student_trainable_params)
        if capped:
            return capped

        lr = budget.learning_rate * lr_multiplier(step, plan.total_steps, plan.warmup_steps, budget.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        sums, grad_norm = self._accumulate(micro_indices, batches)
        step_time = time.perf_counter() - step_start
        self._account_and_log(step, lr, grad_norm, sums, step_time, len(micro_indices))
        return None

    def _accumulate(self, micro_indices: list[list[int]], batches: list[Any]) -> tuple[dict[str, float], float]:
        """Forward/backward each micro-batch (gradient accumulation), clip and step the optimizer at the sync;
        returns this process's sums (loss and metrics weighted by examples, examples, tokens) and the norm."""
        method, accelerator, model, optimizer = self.method, self.accelerator, self.model, self.optimizer
        sums: dict[str, float] = {"loss": 0.0, "examples": 0.0, "tokens": 0.0}
        grad_norm = float("nan")
        loss_sum = torch.zeros((), device=accelerator.device)  # on device: one sync per step, not per micro
        for idx, batch in zip(micro_indices, batches, strict=True):
            batch = to_device(batch, accelerator.device)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    out = method.loss(model, batch, self.ctx)
                # The method returns the mean over its micro-batch; accelerate divides by the number of
                # micro-batches, so the summed gradient is the mean over the effective batch.
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    norm = accelerator.clip_grad_norm_(model.parameters(), self.max_norm)
                    grad_norm = float(norm) if norm is not None else float("nan")  # DeepSpeed clips itself
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            n = len(idx)
            loss_sum += out.loss.detach().float() * n
            sums["examples"] += n
            sums["tokens"] += student_tokens(method, batch)  # re-read: on-policy methods may update it
            for key, value in out.metrics.items():
                sums[f"m:{key}"] = sums.get(f"m:{key}", 0.0) + float(value) * n
        if not accelerator.sync_gradients:
            raise RuntimeError("gradient accumulation out of step: optimizer step did not synchronise")
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize(accelerator.device)  # honest step time
        sums["loss"] = float(loss_sum)
        return sums, grad_norm

    def _account_and_log(self, step: int, lr: float, grad_norm: float, sums: dict[str, float], step_time: float,
                         micro_batches: int) -> None:
        totals = reduce_sums(self.accelerator, sums)
        record_step(self.accounting, totals, micro_batches, step_time, self.accelerator)
        row = step_row(step, lr, grad_norm, totals, step_time, self.accounting, self.plan.steps_per_epoch,
                       self.started)
        self.rows.append(row)
        self.logger.log(row)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s'] or 0:.0f}")

    # --- checkpoints and outputs -------------------------------------------------------------
    def checkpoint(self, step_done: int) -> None:
        """A resumable checkpoint after `step_done` optimizer steps (every process must call it)."""
        state = self.accelerator.get_state_dict(self.model)  # collective under FSDP / ZeRO-3
        if self.lora is not None:  # the frozen base is the student's own weights, loaded again on resume
            state = adapter_state(state)
        if self.is_main:
            trainer = trainer_state(self.fingerprint, self.rows, self.accounting, self.plan, self.started)
            opt_state = {"state": {}, "param_groups": []} if self.sharded else self.optimizer.state_dict()
            ckpt.save_checkpoint(self.work_dir, step_done, state, opt_state, self.method_rng, trainer)
        self.accelerator.wait_for_everyone()

    def finish(self) -> TrainResult:
        """The end state as a checkpoint, then (unless `stop_after_steps` cut the call short) out_dir's
        model.safetensors + config.json, metrics.jsonl and accounting.json."""
        accounting, stop_reason = self.accounting, self.stop_reason
        accounting.stop_reason = stop_reason
        if (self.budget.checkpoint_every and stop_reason != "stop_after_steps"
                and accounting.optimizer_steps > self.start_step):
            self.checkpoint(accounting.optimizer_steps)  # the end state: a crash below reruns from here
        accounting.wall_time_s += time.perf_counter() - self.started

        result = TrainResult(accounting=accounting.to_dict(), log_rows=self.rows, plan=self.plan.to_dict(),
                             stop_reason=stop_reason, completed=stop_reason != "stop_after_steps",
                             resumed_from_step=self.start_step or None, out_dir=self.out_dir,
                             messages=self.logger.messages)
        if not result.completed:
            self.logger.close()
            return result
        self._write_outputs(result)
        return result

    def _write_outputs(self, result: TrainResult) -> None:
        accelerator, out_dir = self.accelerator, self.out_dir
        unwrapped = accelerator.unwrap_model(self.model)
        if self.budget.gradient_checkpointing:
            _set_activation_checkpointing(unwrapped, False)
        if self.lora is not None:  # stored: the adapter, and the merged model every backend loads
            if self.is_main:
                save_adapter(unwrapped, out_dir, str(self.student.identity.get("model", "")))
            unwrapped = merged_model(unwrapped, self.merge_base)
            self.student.model = unwrapped
            state = unwrapped.state_dict()
        else:
            state = accelerator.get_state_dict(self.model)
        unwrapped.eval()
        result.accounting = self.accounting.to_dict()
        if self.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            # fp32 on disk: the master weights (a DeepSpeed bf16 engine gathers bf16 module weights; they are
            # stored upcast, see docs/multi-gpu.md).
            state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
            unwrapped.save_pretrained(out_dir, state_dict=state, max_shard_size="1000GB")
            write_jsonl(out_dir / "metrics.jsonl", self.rows)
            write_json_atomic(out_dir / "accounting.json", {**result.accounting, "plan": self.plan.to_dict()})
        accelerator.wait_for_everyone()
        self.logger.close()
        result.model_path = out_dir / "model.safetensors"
        result.metrics_path = out_dir / "metrics.jsonl"
        result.accounting_path = out_dir / "accounting.json"


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
    solo: bool = False,
    run_name: str | None = None,
    lora: LoraSpec | None = None,
    merge_base: Any = None,
) -> TrainResult:
    """Train `student.model` in place with `method` under `budget`; resume from work_dir if possible.

    `lora`: train adapters on the frozen base and store the merged model (harness.training.lora);
    `merge_base` gives an unquantized copy of a quantized base to merge into.
    `stop_after_steps=k` simulates a kill once global optimizer step k is done: the call returns
    (completed=False) leaving only the regular checkpoints, as a real kill would.
    """
    return Trainer(method, groups, student, budget, seed, work_dir, out_dir, logging=logging,
                   precompute_accounting=precompute_accounting, teacher_loader=teacher_loader,
                   generator=generator, stop_after_steps=stop_after_steps, progress=progress, solo=solo,
                   run_name=run_name, lora=lora, merge_base=merge_base).run()
