"""What each stage of a plan computes, in tokens per model and kind of work (train, forward, decode).

Counts mirror how the stages run (harness/stages, harness/signals, the methods' collate functions):

- samples: `prompts.count x sampling.candidates` responses decoded (each prompt prefilled once).
- signal: log-prob and top-k sources score each kept prompt ONCE plus its n responses (the student's prompt
  cut to `max_prompt_length`, the response to what `max_length` leaves, end-of-turn included; the teacher's
  prompt whole, with the student's cut responses); MCQ preference encodes
  the teacher's context + the question once per prompt, then per pair both responses and the template's
  tail (pairs: n(n-1)/2 under `signals.mcq: released`, n(n-1) under `debiased`); teacher samples: one per
  prompt.
- train: `optimizer steps x effective_batch` prompts; per prompt, by method: SFT/SeqKD one sequence; KD n
  sequences (or 1 with `responses: first`); DPO/SimPO/DPKD/PLaD 2 responses, PAD n, sharing one prompt
  encoding when the student allows it (no sliding window: harness.methods.shared_prompt), else one
  sequence each; GKD a `lmbda` share of on-policy prompts (student decode + teacher forward online), the
  rest as KD. An unknown plugin method is priced as n separate sequences per prompt (an upper bound).
- answers: per item and turn the answer decoded (prompt prefilled); teacher_agreement also scores its
  candidates with the row's model and the answer with the teacher, and samples the candidates once.
- judgements: with a local or served judge, per call its prompt (the judge's instructions, JUDGE_TEMPLATE_CHARS,
  the question, the reference or baseline answer from the data, and the row's answer) and its verdict
  (`judge_max_tokens`; AlpacaEval's preference is read from one token's log-probs) decoded; an API judge
  costs no accelerator time (its calls are counted).

Every prompt the sampling keeps and every filter keeps is assumed kept: counts are upper bounds there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.estimate.lengths import (
    ASSUMED_PROMPT_TOKENS,
    ASSUMED_RESPONSE_TOKENS,
    CHARS_PER_TOKEN,
    Lengths,
    Tokens,
)
from harness.estimate.shapes import ModelShape
from harness.training.accounting import flops_forward, flops_train

PAIRWISE = {"dpo", "simpo", "dpkd", "plad"}
# Characters of a judge's instructions (its system prompt and template without the question and answers:
# AlpacaEval's PROMPT_TEMPLATE 1398, Arena-Hard's system prompt 1729 + template 198, FastChat's single-answer
# prompts about 700). The question and the reference/baseline answer come from the data when it loads.
JUDGE_TEMPLATE_CHARS = {"alpaca_eval2": 1400, "arena_hard": 1930, "mt_bench": 700}
JUDGE_GAMES = {"arena_hard": 2}  # judged twice, positions swapped
LOCAL_JUDGES = {"local", "vllm_server"}
MIN_SHARED_PREFIX = 16  # harness.models.kv.encode_shared_prefix: shorter shared prefixes are not split off


@dataclass(frozen=True)
class Work:
    who: str  # "student", "teacher", "judge", or a trained row
    shape: ModelShape
    kind: str  # "train" | "forward" | "decode"
    tokens: float
    context: float = 0.0  # mean number of tokens each one attends to (the attention term)
    backend: str = "hf"  # decode only: the generation backend

    @property
    def flops(self) -> float:
        """2 N (forward, decode) or 6 N (train) per token, N + the attention term 2 x layers x context x
        attention width (QK^T and AV: 4 x context x width multiply-add FLOPs per layer and forward token)."""
        per_token = self.shape.params + 2.0 * self.shape.layers * self.context * self.shape.attention_width
        count = flops_train if self.kind == "train" else flops_forward
        return count(round(per_token), round(self.tokens))


@dataclass
class StageWork:
    works: list[Work] = field(default_factory=list)
    engine_params: list[int] = field(default_factory=list)  # per generator started: its model's parameters
    engine_backend: str = "hf"
    judge_calls: int = 0  # API calls (no accelerator time)
    notes: list[str] = field(default_factory=list)

    def tokens(self, kind: str) -> float:
        return sum(w.tokens for w in self.works if w.kind == kind)


class Shapes:
    """What every stage's pricing shares: the experiment, model shapes and lengths."""

    def __init__(self, exp: Any, lengths: Lengths, student: ModelShape, teacher: ModelShape) -> None:
        self.exp, self.lengths = exp, lengths
        self.student, self.teacher = student, teacher
        self.prompt = {who: lengths.prompt_tokens(who) for who in ("student", "teacher")}
        self.prefix = {"student": lengths.student.shared_prefix, "teacher": lengths.teacher.shared_prefix}

    def shape(self, who: str) -> ModelShape:
        return self.teacher if who == "teacher" else self.student

    def scored(self, who: str) -> tuple[float, float]:
        """(prompt, response) tokens of one sampled response as training and scoring cut them
        (`budget.truncation`; under `group_as_released` the assumed response length stands for its group's
        longest). The cut is the STUDENT's; the teacher scores the same response tokens in its WHOLE prompt
        (its context: `signals.scoring_inputs`)."""
        budget = self.exp.budget
        full = self.prompt["student"]
        response = Lengths.response(self.exp.sampling.max_new_tokens) + self.lengths.student.turn_end
        if budget.truncation == "group_as_released":
            prompt = full
            if full + response > budget.max_length:
                prompt = min(full, budget.max_prompt_length)
                if prompt + response > budget.max_length:
                    response = budget.max_length - budget.max_prompt_length
        else:
            prompt = min(full, budget.max_prompt_length)
            response = min(response, budget.max_length - prompt)
        return (self.prompt["teacher"] if who == "teacher" else prompt), response

    def score_tokens(self, who: str, groups: float, responses: int, response_tokens: float, batch: int, *,
                     cut: bool = True, extra_prompt: float = 0.0) -> float:
        """Forward tokens of scoring `groups` prompts with `responses` responses each (harness.models.scoring):
        each prompt once, the prefix every prompt shares once per batch, each response but its last token."""
        full = self.prompt[who]
        prompt = self.scored(who)[0] if cut else full
        # Prompts cut from the left (by different amounts) no longer share their first tokens.
        shared = self.prefix[who] if prompt >= full and self.prefix[who] >= MIN_SHARED_PREFIX else 0.0
        batches = math.ceil(groups * responses / max(batch, responses))  # a group is never split
        return (groups * (prompt + extra_prompt - shared) + batches * shared
                + groups * responses * max(response_tokens - 1, 0.0))

    def train_prompts(self) -> int:
        budget, count = self.exp.budget, self.exp.prompts.count
        if budget.max_steps is not None:
            return budget.max_steps * budget.effective_batch
        steps = math.floor((budget.epochs or 1.0) * (count // budget.effective_batch))
        return max(steps, 0) * budget.effective_batch


def samples_work(s: Shapes) -> StageWork:
    sampling, count = s.exp.sampling, s.exp.prompts.count
    who = sampling.sampler
    prompt, response = s.prompt[who], Lengths.response(sampling.max_new_tokens)
    # With prompts.count_after_filters, prompts are drawn until `count` survive the filter: a lower bound.
    notes = ([f"samples: at least {count} prompts (prompts.count_after_filters draws more until {count} survive "
              f"the sampling filter)"] if s.exp.prompts.count_after_filters else [])
    return StageWork([
        Work(who, s.shape(who), "forward", count * prompt, prompt / 2),
        Work(who, s.shape(who), "decode", count * sampling.candidates * response, prompt + response / 2,
             sampling.backend),
    ], engine_params=[s.shape(who).params], engine_backend=sampling.backend, notes=notes)


def signal_work(s: Shapes, source: str) -> StageWork:
    count, n = s.exp.prompts.count, s.exp.sampling.n
    if source in ("student_logprobs", "teacher_logprobs", "teacher_topk"):
        who = "student" if source == "student_logprobs" else "teacher"
        prompt, response = s.scored(who)
        tokens = s.score_tokens(who, count, n, response, s.exp.signals.batch_size)
        return StageWork([Work(who, s.shape(who), "forward", tokens, prompt + response / 2)])
    if source == "mcq_preference":
        return StageWork([_mcq_work(s)])
    if source == "teacher_samples":
        sampling = s.exp.sampling
        prompt, response = s.prompt["teacher"], Lengths.response(sampling.max_new_tokens)
        return StageWork([Work("teacher", s.teacher, "forward", count * prompt, prompt / 2),
                          Work("teacher", s.teacher, "decode", count * response, prompt + response / 2,
                               sampling.backend)], engine_params=[s.teacher.params],
                         engine_backend=sampling.backend)
    return StageWork(notes=[f"signal source {source!r} is not known to the estimate: not priced"])


def _mcq_work(s: Shapes) -> Work:
    from harness.signals import mcq_template

    cfg, n, count = s.exp.signals, s.exp.sampling.n, s.exp.prompts.count
    template = mcq_template(cfg.mcq_template or ("released" if cfg.mcq == "released" else "default"))
    head, _, tail = template.partition("{response_a}")
    tail = tail.replace("{response_b}", "")
    teacher = s.lengths.teacher
    pairs = n * (n - 1) // 2 if cfg.mcq == "released" else n * (n - 1)
    response = Lengths.response(s.exp.sampling.max_new_tokens)
    head_tokens = teacher.text(head.replace("{question}", ""))
    per_pair = 2 * response + teacher.text(tail) + 1  # + the dummy token that reads the next-token distribution
    tokens = s.score_tokens("teacher", count, pairs, per_pair, cfg.batch_size, cut=False, extra_prompt=head_tokens)
    return Work("teacher", s.teacher, "forward", tokens, s.prompt["teacher"] + head_tokens + per_pair / 2)


def train_sequences(method: str, params: Any, n: int) -> tuple[int, bool, bool]:
    """Per prompt of a method's micro-batch: (responses trained, whether they may share one prompt encoding,
    whether the estimate knows the method). GKD: its offline share (the on-policy one is a single sequence)."""
    if method in ("sft", "seqkd"):
        return 1, False, True
    if method in ("kd", "gkd"):
        return (n if getattr(params, "responses", "all") == "all" else 1), False, True
    if method in PAIRWISE:
        return 2, True, True
    if method == "pad":
        return n, True, True
    return n, False, False


def train_work(s: Shapes, method: str, params: Any) -> StageWork:
    n, prompts = s.exp.sampling.n, s.train_prompts()
    prompt, response = s.scored("student")
    shared = s.student.shares_prompts
    k, shareable, known = train_sequences(method, params, n)
    per_prompt = prompt + k * response if (shareable and shared) else k * (prompt + response)
    notes: list[str] = []
    online: list[Work] = []
    if method == "gkd":
        per_prompt, online = _gkd(s, params, per_prompt)
    elif not known:
        notes.append(f"method {method!r} is not known to the estimate: priced as {n} sequences per prompt")
    # Each token attends to its own sequence: prompt + response, or (shared layout) the prompt + its response.
    context = prompt + response / 2 if shared else (prompt + response) / 2
    work = Work("student", s.student, "train", prompts * per_prompt, context)
    return StageWork([work, *online], notes=notes)


def _gkd(s: Shapes, params: Any, offline_per_prompt: float) -> tuple[float, list[Work]]:
    """GKD: a `lmbda` share of prompts sampled from the student and scored by the teacher online."""
    lam, prompts = float(params.lmbda), s.train_prompts()
    prompt, _ = s.scored("student")
    teacher_prompt, _ = s.scored("teacher")
    generated = Lengths.response(params.max_new_tokens)
    online = [
        Work("student", s.student, "decode", lam * prompts * generated, prompt + generated / 2),
        Work("teacher", s.teacher, "forward", lam * prompts * (teacher_prompt + generated + 1),
             (teacher_prompt + generated) / 2),
    ]
    return lam * (prompt + generated + 1) + (1 - lam) * offline_per_prompt, online


def answers_work(s: Shapes, row_kind: str, bench: Any, spec: Any, first_of_row: bool,
                 first_row: bool) -> StageWork:
    who = "teacher" if row_kind == "teacher" else "student"
    tokens = s.lengths.teacher if who == "teacher" else s.lengths.student
    items = s.lengths.bench_items(bench, spec)
    question = s.lengths.item_prompt(tokens, items)
    answer = Lengths.response(bench.max_new_tokens)
    backend = s.exp.generation_backend
    count = items.items
    works = [Work(who, s.shape(who), "forward", count * (items.turns * question + (items.turns - 1) * answer),
                  question / 2),
             Work(who, s.shape(who), "decode", count * items.turns * answer, question + answer / 2, backend)]
    if bench.uses_run:
        works += _agreement_work(s, bench, count, answer, who, first_row)
    return StageWork(works, engine_params=[s.shape(who).params] if first_of_row else [], engine_backend=backend,
                     notes=[f"{spec.name}: {count} items ({items.source})"])


def _agreement_work(s: Shapes, bench: Any, count: int, answer: float, who: str, first_row: bool) -> list[Work]:
    """teacher_agreement: candidates sampled and teacher-scored once; each row scores them; the teacher
    reads each row's answer."""
    k, candidate = bench.params.n, Lengths.response(bench.params.candidate_max_new_tokens)
    p_student, p_teacher = s.prompt["student"], s.prompt["teacher"]
    batch = s.exp.sampling.batch_size
    # The teacher's scorer keeps its prompt passes: the held-out prompts are encoded once per run.
    read = s.score_tokens("teacher", count, 1, answer + 1, batch, cut=False) if first_row else count * answer
    works = [Work("teacher", s.teacher, "forward", read, p_teacher + answer / 2)]
    if who != "teacher":
        works.append(Work(who, s.student, "forward", s.score_tokens("student", count, k, candidate + 1, batch,
                                                                    cut=False), p_student + candidate / 2))
    if first_row:
        works += [Work("student", s.student, "decode", count * k * candidate, p_student + candidate / 2),
                  Work("teacher", s.teacher, "forward", s.score_tokens("teacher", count, k, candidate + 1, batch,
                                                                      cut=False), p_teacher + candidate / 2)]
    return works


def judgements_work(s: Shapes, bench: Any, spec: Any, judge: Any, judge_shape: ModelShape | None,
                    judge_tokens: Tokens | None) -> StageWork:
    if not bench.needs_judge or judge is None:
        return StageWork()
    items = s.lengths.bench_items(bench, spec)
    calls = items.items * items.turns * JUDGE_GAMES.get(spec.name, 1)
    if judge.backend not in LOCAL_JUDGES or judge_shape is None or judge_tokens is None:
        return StageWork(judge_calls=calls, notes=[f"{calls} {judge.backend} judge calls ({judge.model})"])
    answer = Lengths.response(bench.max_new_tokens)
    question = items.prompt_chars if items.prompt_chars is not None else ASSUMED_PROMPT_TOKENS * CHARS_PER_TOKEN
    reference = (items.reference_chars if items.reference_chars is not None
                 else ASSUMED_RESPONSE_TOKENS * CHARS_PER_TOKEN if spec.name != "mt_bench" else 0.0)
    chars = JUDGE_TEMPLATE_CHARS.get(spec.name, 1000) + question + reference
    prompt = chars / judge_tokens.chars_per_token + answer
    verdict = getattr(bench.params, "judge_max_tokens", None) or (1 if spec.name == "alpaca_eval2" else 16)
    verdict = min(verdict, ASSUMED_RESPONSE_TOKENS)
    return StageWork([Work("judge", judge_shape, "forward", calls * prompt, prompt / 2),
                      Work("judge", judge_shape, "decode", calls * verdict, prompt + verdict / 2)])
