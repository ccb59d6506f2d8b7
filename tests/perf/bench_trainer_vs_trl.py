"""Training throughput of our loop vs TRL's DPOTrainer, side by side in one process.

Same random-init Llama-shaped model (same init seed), same preference pairs, same effective batch,
micro-batch and gradient accumulation, same dtype (fp32 on CPU, bf16 on GPU), same optimizer (AdamW,
cosine schedule with warmup, clipping at 1.0), sigmoid DPO with reference log-probs precomputed
before training on both sides (the harness shares them as a cached signal; TRL's
`precompute_ref_log_probs=True`). Both log every step.

Throughput = training tokens (non-pad prompt+chosen and prompt+rejected tokens each side actually fed
the student, counted from its own tokenized data) / wall time between the end of the first optimizer
step and the end of the last, so start-up, reference precompute and the first step's warm-up are
excluded on both sides. The runs alternate (ours, TRL, ours, TRL, ...) and the best of each is kept,
which cancels most of the noise of a shared machine.

    python tests/perf/bench_trainer_vs_trl.py                     # CPU defaults
    python tests/perf/bench_trainer_vs_trl.py --hidden 1024 --layers 8 --steps 30   # on a GPU

TRL is installed only in the perf environment (`tox -e perf`). Prints one JSON line with the ratio.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from harness.config import Budget
from harness.methods.base import DefaultParams, LossOutput, Method, PromptGroup, Signal, TrainContext
from harness.methods.common import pack_sequences, sequence_logprobs
from harness.models.base import LoadedModel
from harness.models.chat import ChatFormatter
from harness.models.tiny import build_byte_tokenizer
from harness.training import train
from harness.training.schedule import warmup_steps_for

BETA = 0.1
WORDS = ("the model learns to prefer answers that the teacher ranks higher than the rest while staying "
         "close to its reference policy and every method sees the same prompts under one budget").split()


class BenchDPO(Method):
    """Sigmoid DPO with cached reference log-probs (as the harness's DPO baseline computes it)."""

    name = "bench_dpo"
    Params = DefaultParams

    def build_examples(self, groups: list[PromptGroup], rng: random.Random) -> list[dict[str, Any]]:
        return [{"messages": g.messages, "chosen": g.responses[0], "rejected": g.responses[1],
                 "ref": g.signals[Signal.REFERENCE_LOGPROB]} for g in groups]

    def collate(self, examples: list[dict[str, Any]], ctx: TrainContext) -> dict[str, Any]:
        fmt = ctx.formatter
        prompts = [fmt.prompt_ids(e["messages"]) for e in examples]
        responses = [fmt.response_ids(e["chosen"]) for e in examples] + [fmt.response_ids(e["rejected"])
                                                                          for e in examples]
        packed = pack_sequences(prompts + prompts, responses, fmt.tokenizer.pad_token_id, ctx.max_length,
                                ctx.max_prompt_length)
        ref = torch.tensor([e["ref"][0] for e in examples] + [e["ref"][1] for e in examples])
        return {"packed": packed, "ref": ref, "n": len(examples), "student_tokens": packed.num_tokens}

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], ctx: TrainContext) -> LossOutput:
        total, _, _ = sequence_logprobs(model, batch["packed"])
        n, ref = batch["n"], batch["ref"]
        logits = BETA * ((total[:n] - ref[:n]) - (total[n:] - ref[n:]))
        return LossOutput(-F.logsigmoid(logits).mean(), {"reward_margin": float(logits.mean().detach()) / BETA})


def build_model(args: argparse.Namespace, tokenizer: Any) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=args.hidden * 4,
                         num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
                         num_key_value_heads=max(1, args.hidden // 64), max_position_embeddings=2048,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def make_data(count: int, response_words: int) -> list[PromptGroup]:
    rng = random.Random(0)

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    return [PromptGroup(f"p{i}", [{"role": "user", "content": text(rng.randint(8, 16)) + "?"}],
                        [text(rng.randint(response_words // 2, response_words)) for _ in range(2)])
            for i in range(count)]


@torch.no_grad()
def add_reference_logprobs(groups: list[PromptGroup], model: torch.nn.Module, fmt: ChatFormatter,
                           budget: Budget) -> None:
    for g in groups:
        prompt = fmt.prompt_ids(g.messages)
        packed = pack_sequences([prompt, prompt], [fmt.response_ids(r) for r in g.responses[:2]],
                                fmt.tokenizer.pad_token_id, budget.max_length, budget.max_prompt_length)
        total, _, _ = sequence_logprobs(model, packed.to(next(model.parameters()).device))
        g.signals[Signal.REFERENCE_LOGPROB] = [float(x) for x in total]


def plan_warmup(budget: Budget) -> int:
    """The same warmup step count our schedule uses (transformers' ratio argument changed across versions)."""
    assert budget.max_steps is not None
    return warmup_steps_for(budget.max_steps, budget.warmup_ratio)


def throughput(tokens_per_step: list[int], step_end_times: list[float]) -> float:
    """Tokens of steps 2..N over the time from the end of step 1 to the end of step N."""
    return sum(tokens_per_step[1:]) / (step_end_times[-1] - step_end_times[0])


def run_ours(args: argparse.Namespace, groups: list[PromptGroup], tokenizer: Any, budget: Budget) -> dict[str, Any]:
    model = build_model(args, tokenizer)
    if torch.cuda.is_available():
        model = model.cuda()
    fmt = ChatFormatter(tokenizer)
    student = LoadedModel(model=model, tokenizer=tokenizer, formatter=fmt, identity={"bench": True})
    with tempfile.TemporaryDirectory() as tmp:
        result = train(BenchDPO(), groups, student, budget, 0, Path(tmp) / "work", Path(tmp) / "out",
                       progress=False)
    rows = result.log_rows
    tokens = [r["tokens"] for r in rows]
    return {"tokens_per_s": throughput(tokens, [r["wall_s"] for r in rows]), "tokens_per_step": tokens[1:3],
            "final_loss": rows[-1]["loss"], "mfu": result.accounting["mfu"]}


def run_trl(args: argparse.Namespace, groups: list[PromptGroup], tokenizer: Any, budget: Budget) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    fmt = ChatFormatter(tokenizer)
    # The same strings our loop trains on: the chat-formatted prompt, responses ending in end-of-turn
    # (TRL appends the eos token, which is our end-of-turn token).
    data = Dataset.from_list([{"prompt": fmt.prompt_text(g.messages), "chosen": g.responses[0],
                               "rejected": g.responses[1]} for g in groups])
    times: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, *a: Any, **k: Any) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter())

    bf16 = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        config = DPOConfig(
            output_dir=tmp, max_steps=budget.max_steps, per_device_train_batch_size=budget.micro_batch,
            gradient_accumulation_steps=budget.effective_batch // budget.micro_batch,
            learning_rate=budget.learning_rate, lr_scheduler_type="cosine", warmup_steps=plan_warmup(budget),
            max_grad_norm=budget.max_grad_norm, weight_decay=0.0, beta=BETA, precompute_ref_log_probs=True,
            max_length=budget.max_length, bf16=bf16, report_to="none", logging_steps=1, save_strategy="no",
            seed=0, dataloader_num_workers=0, disable_tqdm=True,
        )
        trainer = DPOTrainer(model=build_model(args, tokenizer), args=config, train_dataset=data,
                             processing_class=tokenizer, callbacks=[StepTimes()])
        ds = trainer.train_dataset
        per_example = [len(p) * 2 + len(c) + len(r) for p, c, r in
                       zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"], strict=True)]
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    # Tokens per step: TRL's sampler order is its own, so use the mean tokens per prompt times the batch.
    mean_tokens = sum(per_example) / len(per_example)
    tokens = [round(mean_tokens * budget.effective_batch)] * len(times)
    return {"tokens_per_s": throughput(tokens, times), "tokens_per_step_mean": tokens[0],
            "final_loss": losses[-1] if losses else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--response-words", type=int, default=24)
    parser.add_argument("--effective-batch", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import datasets
        import trl
    except ImportError:
        print("TRL is not installed: run this in the perf environment (tox -e perf) or `pip install trl`",
              file=sys.stderr)
        return 2
    datasets.disable_progress_bars()

    tokenizer = build_byte_tokenizer()
    budget = Budget(max_steps=args.steps, effective_batch=args.effective_batch, micro_batch=args.micro_batch,
                    max_length=512, max_prompt_length=256, learning_rate=1e-4, warmup_ratio=0.1,
                    schedule="cosine", max_grad_norm=1.0, mixed_precision="auto")
    groups = make_data(args.prompts, args.response_words)
    reference = build_model(args, tokenizer)
    if torch.cuda.is_available():
        reference = reference.cuda()
    add_reference_logprobs(groups, reference, ChatFormatter(tokenizer), budget)
    del reference

    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for _ in range(args.repeats):
        ours.append(run_ours(args, groups, tokenizer, budget))
        theirs.append(run_trl(args, groups, tokenizer, budget))
    best_ours = max(ours, key=lambda r: r["tokens_per_s"])
    best_trl = max(theirs, key=lambda r: r["tokens_per_s"])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}"
    report = {
        "device": device, "dtype": "bf16" if torch.cuda.is_available() else "fp32", "trl": trl.__version__,
        "torch": torch.__version__, "model": {"hidden": args.hidden, "layers": args.layers},
        "batch": {"effective": args.effective_batch, "micro": args.micro_batch}, "steps": args.steps,
        "ours_tokens_per_s": round(best_ours["tokens_per_s"], 1),
        "trl_tokens_per_s": round(best_trl["tokens_per_s"], 1),
        "ratio": round(best_ours["tokens_per_s"] / best_trl["tokens_per_s"], 3),
        "all_ours": [round(r["tokens_per_s"], 1) for r in ours],
        "all_trl": [round(r["tokens_per_s"], 1) for r in theirs],
        "ours_tokens_per_step": best_ours["tokens_per_step"], "trl_tokens_per_step": best_trl["tokens_per_step_mean"],
        "ours_final_loss": best_ours["final_loss"], "trl_final_loss": best_trl["final_loss"],
        "ours_mfu": best_ours["mfu"],
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
