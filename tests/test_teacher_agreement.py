"""`teacher_agreement`: held-out prompts (never in a trainset), PAD's ranking quantities against brute force,
candidates computed once per run and shared by every row, and the report's comparison with the untrained
student."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from harness.benchmarks.teacher_agreement import agreement, kendall_tau
from harness.config import parse_experiment
from harness.pipeline import Pipeline
from harness.prompts import load_held_out, load_prompts

EXP = {
    "name": "agree",
    "teacher": {"model": "tiny:llama", "seed": 1, "system_prompt": "Be brief."},
    "student": {"model": "tiny:llama", "seed": 0},
    "prompts": {"source": "sharegpt", "count": 6, "max_prompt_chars": 100},
    "sampling": {"candidates": 3, "n": 3, "max_new_tokens": 8},
    "methods": [{"name": "sft"}, {"name": "dpo"}],
    "budget": {"epochs": 1, "effective_batch": 2, "micro_batch": 2, "max_length": 64, "max_prompt_length": 48,
               "learning_rate": 1e-3, "warmup_ratio": 0.0},
    "benchmarks": [{"name": "teacher_agreement", "subset": 5, "max_new_tokens": 6,
                    "params": {"n": 3, "candidate_max_new_tokens": 6}}],
    "judge": {"backend": "local", "model": "tiny:llama"},
}


def test_kendall_tau_and_plackett_luce_jsd_match_brute_force() -> None:
    a, b = [0.3, -1.2, 0.9, 0.1], [0.2, 0.5, 1.0, -0.4]
    pairs = list(itertools.combinations(range(4), 2))
    concordant = sum(1 if (a[i] - a[j]) * (b[i] - b[j]) > 0 else -1 for i, j in pairs)
    assert kendall_tau(a, b) == pytest.approx(concordant / len(pairs))
    assert kendall_tau(a, a) == 1.0 and kendall_tau(a, [-x for x in a]) == -1.0

    def pl(scores: list[float], order: tuple[int, ...]) -> float:
        rest, p = list(order), 1.0
        for k in order:
            p *= math.exp(scores[k]) / sum(math.exp(scores[j]) for j in rest)
            rest.remove(k)
        return p

    beta = 2.0
    perms = list(itertools.permutations(range(4)))
    p = [pl([beta * x for x in a], o) for o in perms]
    q = [pl([beta * x for x in b], o) for o in perms]
    m = [(x + y) / 2 for x, y in zip(p, q, strict=True)]
    jsd = 0.5 * sum(x * math.log(x / z) for x, z in zip(p, m, strict=True)) \
        + 0.5 * sum(y * math.log(y / z) for y, z in zip(q, m, strict=True))
    got = agreement(a, b, beta)
    assert got["pl_jsd"] == pytest.approx(jsd, rel=1e-9)
    assert got["top1"] == 1.0  # both rank candidate 2 first
    assert agreement(a, a, beta)["pl_jsd"] == pytest.approx(0.0, abs=1e-12)


def test_held_out_prompts_are_the_sources_next_ones_and_never_training_prompts() -> None:
    spec = parse_experiment(EXP, "t").prompts
    train = {p["messages"][0]["content"] for p in load_prompts(spec).prompts}
    held = load_held_out(spec, 20).prompts
    assert len(held) == 20 and not train & {p["messages"][0]["content"] for p in held}
    assert load_held_out(spec, 5).prompts == held[:5]  # a longer held-out set extends, never reshuffles


def test_the_pipeline_measures_agreement_on_prompts_no_trainset_contains(tmp_path) -> None:
    pipe = Pipeline(parse_experiment(EXP, "t"), tmp_path, progress=False)
    results = pipe.run()
    plan = pipe.build_plan()
    trainset = plan.trainset.prompt_ids()
    trained_texts = {p["messages"][0]["content"] for p in plan.prompts.read() if p["prompt_id"] in trainset}
    for row in plan.rows:
        answers = [json.loads(line) for line in
                   (plan.answers(row, 0).artifact.path / "answers.jsonl").read_text().splitlines()]
        assert len(answers) == 5
    held = load_held_out(pipe.exp.prompts, 5).prompts
    assert not trained_texts & {p["messages"][0]["content"] for p in held}
    # Candidates are sampled and teacher-scored once for all rows.
    assert len(list((tmp_path / "artifacts" / "shared").iterdir())) == 1
    by_row = {r.row: r.benchmarks["teacher_agreement"] for r in results.rows}
    teacher = by_row["teacher"]
    assert teacher.metrics["rank_agreement"] == pytest.approx(1.0)  # the teacher agrees with itself
    assert teacher.metrics["pl_jsd"] == pytest.approx(0.0, abs=1e-9)
    student = by_row["student (untrained)"]
    assert student.metrics["rank_agreement"] < 1.0
    board = json.loads((tmp_path / "leaderboard.json").read_text())
    vs = {(c["row"], c["metric"]): c for c in board["vs_untrained"]}
    c = vs[("teacher", "teacher_agreement.rank_agreement")]
    teacher_tau = [it["rank_agreement"] for it in teacher.per_item]
    student_tau = [it["rank_agreement"] for it in student.per_item]
    assert c["diff"] == pytest.approx(sum(teacher_tau) / 5 - sum(student_tau) / 5)
    assert c["ci_low"] <= c["diff"] <= c["ci_high"] and c["mdd"] > 0
    assert c["resolved"] is False  # 5 items: too few to call any difference resolved, whatever the interval
    md = (tmp_path / "LEADERBOARD.md").read_text()
    assert "Versus the untrained student" in md and "What this run can resolve" in md
    res = {r["metric"]: r for r in board["resolution"]}["teacher_agreement.rank_agreement"]
    mdds = sorted(c["mdd"] for (row, m), c in vs.items()
                  if m == res["metric"] and row in ("sft", "dpo") and c["mdd"] is not None)
    assert res["n_items"] == 5 and res["methods"] == 2
    assert res["median_method_mdd"] == (mdds[len(mdds) // 2] if mdds else None)


def test_agreement_rewards_are_each_models_own_mean_log_likelihoods(tmp_path) -> None:
    """A row's recorded rewards equal its model's mean log-prob of the candidates, scored one by one."""
    pipe = Pipeline(parse_experiment({**EXP, "methods": [{"name": "sft"}]}, "t"), tmp_path, progress=False)
    pipe.run()
    plan = pipe.build_plan()
    student_row = next(r for r in plan.rows if r.kind == "student")
    record = json.loads((plan.answers(student_row, 0).artifact.path / "answers.jsonl").read_text().splitlines()[0])
    cands = json.loads(next((tmp_path / "artifacts" / "shared").iterdir()).joinpath("values.json").read_text())[0]
    student = pipe.models.loaded(pipe.ctx.student)
    prompt = student.formatter.prompt_ids(load_held_out(pipe.exp.prompts, 5).prompts[0]["messages"])
    for text, done, got in zip(cands["texts"], cands["finished"], record["row_rewards"], strict=True):
        resp = student.formatter.response_ids(text, finished=done)
        ids = torch.tensor([prompt + resp])
        with torch.no_grad():
            lp = torch.log_softmax(student.model(input_ids=ids).logits[0, :-1].float(), -1)
        token_lp = lp[len(prompt) - 1:].gather(-1, torch.tensor(resp)[:, None]).squeeze(-1)
        assert got == pytest.approx(float(token_lp.mean()), abs=1e-4)
