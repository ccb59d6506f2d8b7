"""`teacher_agreement`: does the student now prefer what the teacher prefers? Judge-free, on held-out prompts.

Held-out prompts come from the experiment's own prompt source, after the training prompts in its seeded
order (`harness.prompts.load_held_out`): never trained on, same distribution. Per prompt:

- `n` candidate responses are sampled once (the untrained student, the `hf` backend, seeded), shared by
  every row, and the teacher scores each: its reward is the mean log-likelihood per token in its own context
  (PAD's reward). Each row's model scores the same candidates without that context.
- ranking agreement: Kendall's tau between the row's and the teacher's rewards; `top1`: the row's best
  candidate is the teacher's best; `pl_jsd`: the Jensen-Shannon divergence between the two Plackett-Luce
  distributions over all n! rankings of the candidates, with rewards scaled by `beta` (PAD's quantity,
  PAD's default beta). The teacher row agrees with itself perfectly: it is the ceiling, by construction.
- `teacher_loglik`: the teacher's mean log-likelihood per token of the row's greedy answer (in the teacher's
  context): the quantity context distillation moves. The teacher's own greedy answer is the reference.

Rows are compared with the untrained student paired over prompts (the leaderboard's "vs the untrained
student" table, bootstrap intervals). Works for any teacher/student pair that can both score text.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from harness.benchmarks.base import AnswerModel, Benchmark, BenchmarkData, ReportColumn, ScoreResult
from harness.benchmarks.item_stats import mean_and_stderr
from harness.judges.base import Judge
from harness.methods.pad_loss import jensen_shannon, plackett_luce_log_probs

CANDIDATES_VERSION = 1  # bump when how candidates or their teacher rewards are computed changes
METRICS = ("teacher_loglik", "rank_agreement", "top1", "pl_jsd")


class TeacherAgreementParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    n: int = Field(4, ge=2, le=7)
    """Candidates per prompt (all n! rankings are enumerated)."""
    candidate_max_new_tokens: int = Field(32, ge=1)
    """Longest candidate response, in tokens."""
    temperature: float = Field(1.0, gt=0)
    """Temperature of the candidates' sampling."""
    top_p: float = Field(0.95, gt=0, le=1)
    """Nucleus sampling of the candidates."""
    beta: float = Field(10.0, gt=0)
    """Plackett-Luce scale on mean log-likelihood rewards (PAD's default)."""
    seed: int = 0
    """Seed of the candidates' sampling."""


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-a between two score vectors (pairs tied in either count 0)."""
    n, total = len(a), 0.0
    for i in range(n):
        for j in range(i + 1, n):
            total += math.copysign(1.0, a[i] - a[j]) * math.copysign(1.0, b[i] - b[j]) \
                if a[i] != a[j] and b[i] != b[j] else 0.0
    return total / (n * (n - 1) / 2)


def agreement(row_rewards: list[float], teacher_rewards: list[float], beta: float) -> dict[str, float]:
    """Ranking agreement, top-1 match and Plackett-Luce JSD of one prompt's candidates."""
    row = torch.tensor(row_rewards, dtype=torch.float64) * beta
    teacher = torch.tensor(teacher_rewards, dtype=torch.float64) * beta
    jsd = float(jensen_shannon(plackett_luce_log_probs(row), plackett_luce_log_probs(teacher)))
    return {"rank_agreement": kendall_tau(row_rewards, teacher_rewards),
            "top1": float(max(range(len(row_rewards)), key=row_rewards.__getitem__)
                          == max(range(len(teacher_rewards)), key=teacher_rewards.__getitem__)),
            "pl_jsd": jsd}


class TeacherAgreement(Benchmark):
    """Judge-free: how well each row's answers agree with the teacher (its log-likelihood, PL ranking) on
    held-out prompts of the run's own source, with a dev split for tuning."""

    name = "teacher_agreement"
    title = "Teacher agreement"
    Params = TeacherAgreementParams
    params: TeacherAgreementParams
    needs_judge = False
    headline = "teacher_loglik"
    uses_run = True
    needs_weights = True
    default_max_new_tokens = 64

    @classmethod
    def columns(cls) -> tuple[ReportColumn, ...]:
        # Per-item records carry every metric; `score` is the headline, the teacher's log-likelihood.
        return (
            ReportColumn("teacher_loglik", "Teacher LL", se_metric="teacher_loglik_stderr", digits=3,
                         headline=True, paired=True),
            ReportColumn("rank_agreement", "Rank tau", se_metric="rank_agreement_stderr", digits=3),
            ReportColumn("top1", "Top-1 %", se_metric="top1_stderr", digits=1),
            ReportColumn("pl_jsd", "PL JSD", se_metric="pl_jsd_stderr", digits=4, higher_is_better=False),
        )

    has_dev_split = True  # the held-out prompts after the test ones
    DEFAULT_ITEMS = 32

    def test_items(self) -> int:
        return self.subset or self.DEFAULT_ITEMS

    def load(self) -> BenchmarkData:
        n = self.subset or self.DEFAULT_ITEMS
        skip = self.dev_after if self.split == "dev" else 0
        prompts, source = self.run_context().held_out_prompts(n, skip=skip)
        items = [{"id": p["prompt_id"], "messages": p["messages"]} for p in prompts]
        what = "DEV split: held-out prompts after the test ones" if self.split == "dev" else "held-out prompts"
        return BenchmarkData(items, f"{what} of the experiment's source: {source}", source)

    def greedy_conversations(self, data: BenchmarkData) -> list[list[dict[str, str]]]:
        return [it["messages"] for it in data.items]

    def generate(self, model: AnswerModel, data: BenchmarkData) -> list[dict[str, Any]]:
        from harness.models.scoring import Scorer

        run = self.run_context()
        candidates = run.cached("teacher_agreement_candidates",
                                {"items": [it["id"] for it in data.items], "data": data.version,
                                 "params": self.params.model_dump(mode="json"), "version": CANDIDATES_VERSION},
                                lambda: self._candidates(data))
        answers = model.answer(self.greedy_conversations(data), self.max_new_tokens,
                               progress=f"{self.name}: answers")
        mine = model.in_memory()
        teacher = run.teacher()
        if mine.identity == teacher.identity:  # the teacher row: its rewards are the candidates' own
            row_rewards = [c["teacher_rewards"] for c in candidates]
        else:
            groups = [(mine.formatter.prompt_ids(it["messages"]),
                       [mine.formatter.response_ids(t, finished=f) for t, f in zip(c["texts"], c["finished"], strict=True)])
                      for it, c in zip(data.items, candidates, strict=True)]
            scores = Scorer(mine, batch_size=run.batch_size).score_groups(groups, progress=f"{self.name}: {model.name} scores")
            row_rewards = [[s.mean_logprob for s in group] for group in scores]
        answer_scores = run.teacher_scorer().score_groups([
            (teacher.formatter.prompt_ids(it["messages"]), [teacher.formatter.response_ids(a.text, finished=a.finished)])
            for it, a in zip(data.items, answers, strict=True)], progress=f"{self.name}: teacher reads answers")
        records = []
        for it, cand, rewards, answer, read in zip(data.items, candidates, row_rewards, answers, answer_scores,
                                                   strict=True):
            records.append({"id": it["id"], "output": answer.text, "finished": answer.finished,
                            # an empty answer (no token to read) has no log-likelihood: left out, not 0
                            "teacher_loglik": read[0].mean_logprob if read[0].n_tokens else None,
                            "answer_tokens": read[0].n_tokens,
                            "row_rewards": rewards, "teacher_rewards": cand["teacher_rewards"],
                            **agreement(rewards, cand["teacher_rewards"], self.params.beta)})
        return records

    def _candidates(self, data: BenchmarkData) -> list[dict[str, Any]]:
        """n responses per prompt from the untrained student (seeded, hf backend) and the teacher's rewards."""
        from harness.models.base import GenerationRequest, SamplingParams
        from harness.models.hf_generator import HFGenerator
        from harness.models.scoring import Scorer

        run = self.run_context()
        student, teacher, p = run.student(), run.teacher(), self.params
        requests = [GenerationRequest(student.formatter.prompt_ids(it["messages"]), seed=p.seed * 100_003 + i, n=p.n)
                    for i, it in enumerate(data.items)]
        outs = HFGenerator(student, batch_size=run.generation_batch_size).generate(
            requests, SamplingParams(temperature=p.temperature, top_p=p.top_p, max_new_tokens=p.candidate_max_new_tokens),
            progress=f"{self.name}: candidates")
        scores = Scorer(teacher, batch_size=run.batch_size).score_groups([
            (teacher.formatter.prompt_ids(it["messages"]),
             [teacher.formatter.response_ids(t, finished=f) for t, f in zip(o.texts, o.finished, strict=True)])
            for it, o in zip(data.items, outs, strict=True)], progress=f"{self.name}: teacher scores candidates")
        return [{"texts": list(o.texts), "finished": [bool(f) for f in o.finished],
                 "teacher_rewards": [s.mean_logprob for s in group]} for o, group in zip(outs, scores, strict=True)]

    def judge(self, judge: Judge | None, data: BenchmarkData, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Judge-free: every metric was measured with the answers."""
        return [{k: a[k] for k in ("id", *METRICS, "finished")} for a in answers]

    def score(self, judgements: list[dict[str, Any]]) -> ScoreResult:
        metrics: dict[str, float | int | None] = {"n_total": len(judgements)}
        for key in METRICS:
            scale = 100.0 if key == "top1" else 1.0  # top-1 match in percent, like other accuracies
            mean, stderr = mean_and_stderr([scale * float(j[key]) for j in judgements if j[key] is not None])
            metrics[key], metrics[f"{key}_stderr"] = mean, stderr
        per_item = [{"id": j["id"], "score": j[self.headline], **{k: j[k] for k in METRICS}} for j in judgements]
        return ScoreResult(metrics=metrics, per_item=per_item)
