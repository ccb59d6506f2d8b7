"""Arena-Hard style control fitted jointly with an official judgement pool (as the leaderboard) or on one model's
games (labelled so), and answer-token counts that are never shown as official when they are approximate."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from harness.benchmarks.arena_hard import ArenaHard
from harness.benchmarks.arena_hard import scoring as S
from harness.benchmarks.arena_hard.formats import V2_LABEL_TO_A_SCORE
from harness.benchmarks.arena_hard.official import load_style_pool
from harness.benchmarks.base import Answer, AnswerModel, BenchmarkData
from harness.errors import DataSourceError
from harness.judges.base import Judge, JudgeRequest, JudgeResponse

LABELS = ["A>>B", "A>B", "A=B", "B>A", "B>>A"]
V2_BASELINE = "o3-mini-2025-01-31"
V01_BASELINE = "gpt-4-0314"


def _meta(rng: np.random.Generator) -> dict[str, Any]:
    return {"token_len": int(rng.integers(20, 900)),
            "header_count": {"h1": int(rng.integers(0, 3)), "h2": int(rng.integers(0, 2))},
            "list_count": {"ordered": int(rng.integers(0, 5)), "unordered": int(rng.integers(0, 3))},
            "bold_count": {"**": int(rng.integers(0, 4)), "__": 0}}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _pool_v2(root: Path, n_q: int, seed: int) -> tuple[Path, dict[str, Any], dict[str, list[tuple[str, str]]]]:
    """arena-hard-auto's v2.0 layout with two other models: their judgements and answers, and the baseline's."""
    rng = np.random.default_rng(seed)
    bench = root / "data" / "arena-hard-v2.0"
    base_meta = {f"q{i}": _meta(rng) for i in range(n_q)}
    _write_jsonl(bench / "model_answer" / f"{V2_BASELINE}.jsonl", [
        {"uid": q, "model": V2_BASELINE, "messages": [{"role": "assistant", "content": {"answer": "..."}}],
         "metadata": m} for q, m in base_meta.items()])
    games: dict[str, list[tuple[str, str]]] = {}
    for name in ("model-x", "model-y"):
        pairs = [(LABELS[i], LABELS[j]) for i, j in rng.integers(0, 5, size=(n_q, 2))]
        games[name] = pairs
        _write_jsonl(bench / "model_judgment" / "gpt-4.1" / f"{name}.jsonl", [
            {"uid": f"q{i}", "category": "hard_prompt", "judge": "gpt-4.1", "model": name, "baseline": V2_BASELINE,
             "games": [{"score": a, "judgment": {"answer": "..."}}, {"score": b, "judgment": {"answer": "..."}}]}
            for i, (a, b) in enumerate(pairs)])
        _write_jsonl(bench / "model_answer" / f"{name}.jsonl", [
            {"uid": f"q{i}", "model": name, "messages": [{"role": "assistant", "content": {"answer": "..."}}],
             "metadata": _meta(rng)} for i in range(n_q)])
    return bench / "model_judgment" / "gpt-4.1", base_meta, games


def _own_rows(n_q: int, base_meta: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [{"id": f"q{i}", "category": "hard_prompt", "games": [{"score": LABELS[a]}, {"score": LABELS[b]}],
             "metadata": {"model": _meta(rng), "baseline": base_meta[f"q{i}"]}}
            for i, (a, b) in enumerate(rng.integers(0, 5, size=(n_q, 2)))]


def _lbfgs_bt(torch: Any, x: Any, y: Any) -> Any:
    """math_utils.fit_pairwise_model(loss_type="bt") (lr 1.0 so it converges; upstream's release uses 0.1)."""
    logits = torch.nn.Parameter(torch.full((x.shape[1],), 0.5, dtype=torch.float64))
    opt = torch.optim.LBFGS([logits], lr=1.0, max_iter=50, tolerance_grad=1e-9, tolerance_change=1e-9)

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ logits, y, reduction="sum")
        loss.backward()
        return loss

    opt.step(closure)
    return logits.detach()


def test_v2_joint_style_control_matches_show_result_over_the_pool(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    n_q, rounds, seed = 30, 5, 4
    pool_dir, base_meta, games = _pool_v2(tmp_path, n_q, seed=1)
    rows = _own_rows(n_q, base_meta, seed=2)
    bench = ArenaHard({"version": "v2.0", "style_control": True, "style_control_pool": str(pool_dir),
                       "bootstrap_rounds": rounds, "seed": seed})
    ours = bench.score(rows)
    single = ArenaHard({"version": "v2.0", "style_control": True, "bootstrap_rounds": rounds, "seed": seed}).score(rows)

    # Transcript of show_result.py (v2.0): load_judgments over every model's file, then
    # print_leaderboard_with_style_features: one_hot_encode (model +1, baseline -1), features over all battles.
    answers = {name: {json.loads(line)["uid"]: json.loads(line)["metadata"] for line in
                      (pool_dir.parent.parent / "model_answer" / f"{name}.jsonl").read_text().splitlines()}
               for name in games}
    answers["student"] = {r["id"]: r["metadata"]["model"] for r in rows}
    label_to_score = {k: [v] * (3 if strong else 1) for k, (v, strong) in V2_LABEL_TO_A_SCORE.items()}
    battles: list[tuple[str, str, float]] = []
    all_games = {"student": [(r["games"][0]["score"], r["games"][1]["score"]) for r in rows], **games}
    for name, pairs in all_games.items():
        for i, (g1, g2) in enumerate(pairs):
            battles += [(name, f"q{i}", s) for s in label_to_score[g2] + [1 - s for s in label_to_score[g1]]]

    def totals(meta: dict[str, Any]) -> list[float]:
        return [float(v if isinstance(v, int) else sum(v.values())) for v in meta.values()]

    mt = torch.tensor([totals(answers[m][q]) for m, q, _ in battles], dtype=torch.float64)
    bt = torch.tensor([totals(base_meta[q]) for _, q, _ in battles], dtype=torch.float64)
    feat = torch.zeros_like(mt)
    feat[:, 0] = (mt[:, 0] - bt[:, 0]) / (mt[:, 0] + bt[:, 0])
    md, bd = mt[:, 1:] / (mt[:, :1] + 1), bt[:, 1:] / (bt[:, :1] + 1)
    feat[:, 1:] = (md - bd) / (md + bd + 1)
    feat = (feat - feat.mean(0)) / feat.std(0)
    models = sorted({m for m, _, _ in battles} | {V2_BASELINE})
    onehot = torch.zeros((len(battles), len(models)), dtype=torch.float64)
    for k, (m, _, _) in enumerate(battles):
        onehot[k, models.index(m)], onehot[k, models.index(V2_BASELINE)] = 1.0, -1.0
    x = torch.cat([onehot, feat], 1)
    y = torch.tensor([s for _, _, s in battles], dtype=torch.float64)
    np.random.seed(seed)
    idxs = np.random.randint(0, len(battles), size=(rounds, len(battles)))
    rates = []
    for idx in idxs:
        c = _lbfgs_bt(torch, x[idx], y[idx])
        s_i, b_i = models.index("student"), models.index(V2_BASELINE)
        rates.append(float(torch.exp(c[s_i]) / (torch.exp(c[s_i]) + torch.exp(c[b_i]))))
    assert ours.metrics["score"] == pytest.approx(100 * np.quantile(rates, 0.5), abs=1e-3)
    assert ours.metrics["ci_high"] == pytest.approx(100 * np.quantile(rates, 0.95), abs=1e-3)
    assert abs(ours.metrics["score"] - single.metrics["score"]) > 0.05  # the pool changes the fit
    assert any(n.startswith("joint style control (both)") and "2 other models" in n for n in ours.notes)
    assert any(n.startswith("single-model style control (both)") for n in single.notes)
    assert not any("single-model" in n for n in ours.notes)


def test_v01_joint_style_control_matches_the_2024_sklearn_fit(tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    n_q, rounds, seed = 25, 4, 3
    bench_dir = tmp_path / "arena-hard-v0.1"
    judge_dir = bench_dir / "model_judgment" / "gpt-4-1106-preview"
    meta: dict[str, dict[str, Any]] = {}
    all_pairs: dict[str, list[tuple[str, str]]] = {}
    for name in (V01_BASELINE, "student", "model-x", "model-y"):
        meta[name] = {f"q{i}": _meta(rng) for i in range(n_q)}
        _write_jsonl(bench_dir / "model_answer" / f"{name}.jsonl", [
            {"question_id": q, "model_id": name, "choices": [{"turns": [{"content": "...", "token_len": m["token_len"]}]}],
             "conv_metadata": m} for q, m in meta[name].items()])
        if name != V01_BASELINE:
            all_pairs[name] = [(LABELS[i], LABELS[j]) for i, j in rng.integers(0, 5, size=(n_q, 2))]
            _write_jsonl(judge_dir / f"{name}.jsonl", [
                {"question_id": f"q{i}", "model": name, "judge": "gpt-4-1106-preview",
                 "games": [{"score": a}, {"score": b}]} for i, (a, b) in enumerate(all_pairs[name])])
    ours = ArenaHard.score_official(judge_dir / "student.jsonl", style_control=True, bootstrap_rounds=rounds,
                                    seed=seed, style_pool=judge_dir)

    # Transcript of the 2024 show_result.py: get_battles_from_row for every model, construct_style_matrices,
    # fit_bt (sklearn's default L2; tolerance tightened so it reaches the optimum), the style bootstrap.
    weight = {"A>>B": 3, "B>>A": 3}
    winner1 = {"A=B": "tie", "A>B": "model_a", "A>>B": "model_a", "B>A": "model_b", "B>>A": "model_b"}
    winner2 = {"A=B": "tie", "A>B": "model_b", "A>>B": "model_b", "B>A": "model_a", "B>>A": "model_a"}
    rows = []
    for name in ("student", "model-x", "model-y"):  # judgement files in glob order: ours first here
        for i, (g1, g2) in enumerate(all_pairs[name]):
            for g, table in ((g1, winner1), (g2, winner2)):
                row = {"model_a": V01_BASELINE, "model_b": name, "winner": table[g], "a": meta[V01_BASELINE][f"q{i}"],
                       "b": meta[name][f"q{i}"]}
                rows += [row] * weight.get(g, 1)
    df = pd.DataFrame(rows)
    models = pd.Series(np.arange(4), index=pd.concat([df["model_a"], df["model_b"]]).unique())
    k = len(df)
    keys = ["token_len", "header_count", "list_count", "bold_count"]

    def total(v: Any) -> float:
        return float(v if isinstance(v, int) else sum(v.values()))

    a = np.array([[total(r[key]) for key in keys] for r in df["a"]])
    b = np.array([[total(r[key]) for key in keys] for r in df["b"]])
    diff = (a - b) / (a + b + 1)
    diff = np.concatenate([diff, diff])
    x = np.zeros((2 * k, 4 + 4))
    x[np.arange(2 * k), models[pd.concat([df["model_a"]] * 2)].to_numpy()] = math.log(10)
    x[np.arange(2 * k), models[pd.concat([df["model_b"]] * 2)].to_numpy()] = -math.log(10)
    x[:, 4:] = (diff - diff.mean(0)) / diff.std(0)
    y = np.zeros(2 * k)
    y[np.concatenate([df["winner"] == "model_a"] * 2)] = 1.0
    ties = np.concatenate([df["winner"] == "tie", np.zeros(k, dtype=bool)])
    y[ties] = 1.0

    def win_rate(xx: np.ndarray, yy: np.ndarray) -> float:
        coef = LogisticRegression(fit_intercept=False, tol=1e-10, max_iter=10000).fit(xx, yy).coef_[0]
        return 100 / (1 + 10 ** (coef[models[V01_BASELINE]] - coef[models["student"]]))

    point = win_rate(x, y)
    np.random.seed(seed)
    tie_of = (df["winner"] == "tie").to_numpy()
    boots = []
    for _ in range(rounds):
        idx = np.random.choice(list(range(k)), size=k, replace=True)
        non_tie, tie = idx[~tie_of[idx]], np.concatenate([idx[tie_of[idx]], idx[tie_of[idx]] + k])
        boots.append(win_rate(np.concatenate([x[non_tie], x[non_tie], x[tie]]),
                              np.concatenate([y[non_tie], y[non_tie], y[tie]])))
    assert ours.metrics["score"] == pytest.approx(point, abs=1e-4)
    assert ours.metrics["ci_low"] == pytest.approx(np.percentile(boots, 2.5), abs=1e-4)
    assert ours.metrics["ci_high"] == pytest.approx(np.percentile(boots, 97.5), abs=1e-4)
    assert any("joint style control" in n and "2 other models" in n for n in ours.notes)  # itself excluded
    alone = ArenaHard.score_official(judge_dir / "student.jsonl", style_control=True, bootstrap_rounds=rounds,
                                     seed=seed)
    assert any("single-model style control" in n for n in alone.notes)
    assert alone.metrics["score"] != pytest.approx(ours.metrics["score"], abs=1e-3)


def test_style_pool_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="style_control_pool is only used with style_control: true"):
        ArenaHard({"style_control_pool": str(tmp_path)})
    with pytest.raises(DataSourceError, match="must be a folder of arena-hard-auto judgement files"):
        load_style_pool(tmp_path / "nothing", "v2.0", "hard_prompt", V2_BASELINE)
    pool_dir, _base, _games = _pool_v2(tmp_path, 4, seed=0)
    (pool_dir.parent.parent / "model_answer" / "model-y.jsonl").unlink()
    with pytest.raises(DataSourceError, match="'model-y'.*answer metadata"):
        load_style_pool(pool_dir, "v2.0", "hard_prompt", V2_BASELINE)
    with pytest.raises(DataSourceError, match="no other model's judgements in category creative_writing"):
        load_style_pool(pool_dir, "v2.0", "creative_writing", V2_BASELINE)


# ------------------------------------------------------------------------------------ answer tokens
class _Model(AnswerModel):
    @property
    def name(self) -> str:
        return "m"

    def answer(self, conversations: list[list[dict[str, str]]], max_new_tokens: int,
               progress: str | None = None, temperature: float = 0.0) -> list[Answer]:
        return [Answer("STUDENT ANSWER with several words, and punctuation.\n- a point", True) for _ in conversations]


class _Judge(Judge):
    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "canned"}

    def complete(self, requests: list[JudgeRequest], progress: str | None = None) -> list[JudgeResponse]:
        return [JudgeResponse(text="My final verdict is [[A=B]]") for _ in requests]


def _v01_data() -> BenchmarkData:
    items = [{"id": f"q{i}", "category": "arena-hard-v0.1", "prompt": f"Q{i}?", "baseline_answer": "base answer",
              "baseline_metadata": {**S.answer_metadata("x"), "token_counter": S.ANSWER_FILE_COUNTER,
                                    "token_len": 321}} for i in range(3)]
    return BenchmarkData(items=items, source="hand-made")


def test_offline_token_counts_are_labelled_approximate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "_tiktoken_encoder", lambda encoding: None)  # no BPE file: what happens offline
    bench = ArenaHard({"version": "v0.1", "bootstrap_rounds": 5, "style_control": True})
    data = _v01_data()
    answers = bench.generate(_Model(), data)
    assert answers[0]["metadata"]["token_counter"] == S.APPROX_COUNTER
    records = bench.judge(_Judge(), data, answers)
    # The baseline's official count would not compare with an approximate one: both are counted alike.
    assert {r["metadata"]["baseline"]["token_counter"] for r in records} == {S.APPROX_COUNTER}
    assert records[0]["metadata"]["baseline"]["token_len"] == S.count_tokens("base answer")[0] != 321
    result = bench.score(records)
    assert "avg_tokens" not in result.metrics
    assert result.metrics["avg_tokens_approx"] == S.count_tokens(answers[0]["output"])[0]
    [note] = [n for n in result.notes if n.startswith("avg_tokens_approx")]
    assert "approximation" in note and "tiktoken cl100k_base" in note


def test_official_tokenizer_counts_are_avg_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    class Encoder:
        def __init__(self, encoding: str) -> None:
            asked.append(encoding)

        def encode(self, text: str, disallowed_special: Any = ()) -> list[int]:
            return list(range(len(text.split())))

    monkeypatch.setattr(S, "_tiktoken_encoder", Encoder)
    data = _v01_data()
    for version, encoding in (("v0.1", "cl100k_base"), ("v2.0", "o200k_base")):
        asked.clear()
        bench = ArenaHard({"version": version, "bootstrap_rounds": 5})
        answers = bench.generate(_Model(), data)
        assert set(asked) == {encoding}  # gen_answer.py: gpt-3.5-turbo (v0.1), gpt-4o (v2.0)
        records = bench.judge(_Judge(), data, answers)
        assert records[0]["metadata"]["baseline"]["token_len"] == 321  # the answer file's own count is kept
        result = bench.score(records)
        assert result.metrics["avg_tokens"] == len(answers[0]["output"].split())
        assert "avg_tokens_approx" not in result.metrics
