"""`prompts.count_after_filters`: `count` prompts REMAIN after the sampling filter (prompts are drawn further in
the seeded order until they do), held-out prompts stay disjoint from every prompt drawn, the default's keys are
unchanged, and the paper configs plan the released run's 432 optimizer steps."""

from __future__ import annotations

import json
import threading
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers.experiments import small_experiment

from harness.config import PromptSource, load_experiment, parse_experiment
from harness.errors import DataSourceError
from harness.processes import ProcessInfo
from harness.prompts import load_held_out, load_prompts
from harness.stages.drawing import draw_until_kept, next_draw
from harness.store import ArtifactStore, read_jsonl, write_jsonl
from harness.training.budget import plan_training

LEADERBOARDS = Path(__file__).resolve().parents[1] / "leaderboards"


def survives(prompt_id: str) -> bool:
    """The stand-in sampling filter: about two prompts in three keep their samples."""
    return zlib.crc32(prompt_id.encode()) % 3 != 0


def fake_run_samples(exp: Any, prompts: list[dict[str, Any]], generator: Any, out: Path) -> dict[str, Any]:
    """What `harness.stages.data.run_samples` writes, with `survives` as the filter (no model is asked)."""
    n = exp.sampling.n
    kept = [p for p in prompts if survives(p["prompt_id"])]
    write_jsonl(out / "samples.jsonl", [{"prompt_id": p["prompt_id"], "messages": p["messages"],
                                         "responses": [f"answer {k} to {p['prompt_id']}" for k in range(n)],
                                         "finished": [True] * n} for p in kept])
    return {"sampler": "student", "kept_prompts": len(kept),
            "dropped_prompts": [p["prompt_id"] for p in prompts if not survives(p["prompt_id"])],
            "unfinished": {"candidates": 0, "candidates_total": n * len(prompts), "kept": 0, "of": n * len(kept)},
            "accounting": {"student_generation_tokens": 5 * n * len(prompts)}}


def test_the_default_keeps_the_keys_made_before_the_option() -> None:
    assert "count_after_filters" not in PromptSource().model_dump(mode="json")
    assert PromptSource(count_after_filters=True).model_dump(mode="json")["count_after_filters"] is True


def test_next_draw_asks_for_what_the_survival_so_far_says_is_missing() -> None:
    assert next_draw(drawn=8, kept=4, want=10, pool=100, chunk=4) == 20  # 6 missing at 1/2 -> 12 more
    assert next_draw(drawn=8, kept=7, want=8, pool=100, chunk=4) == 12  # at least one more chunk
    assert next_draw(drawn=8, kept=0, want=8, pool=100, chunk=4) == 16
    assert next_draw(drawn=96, kept=4, want=50, pool=100, chunk=4) == 100  # never past the pool


def _drawing_ctx(tmp_path: Path, count: int, chunk: int, rank: int = 0, world: int = 1) -> Any:
    exp = SimpleNamespace(prompts=PromptSource(count=count, count_after_filters=True),
                          sampling=SimpleNamespace(n=2), data_parallel=SimpleNamespace(chunk=chunk))
    store = ArtifactStore(tmp_path)
    return SimpleNamespace(exp=exp, store=store, processes=ProcessInfo(rank=rank, world_size=world),
                           artifact=store.artifact("samples", "samples", {"t": 1}))


def _draw(tmp_path: Path, pool: list[dict[str, Any]], count: int, chunk: int, rank: int = 0, world: int = 1,
          out: Path | None = None) -> dict[str, Any] | None:
    ctx = _drawing_ctx(tmp_path, count, chunk, rank, world)
    exp = SimpleNamespace(sampling=SimpleNamespace(n=2))
    return draw_until_kept(ctx, ctx, len(pool), lambda items, part: fake_run_samples(exp, pool[items], None, part),
                           out or tmp_path)


def _pool(size: int) -> list[dict[str, Any]]:
    return [{"prompt_id": f"q{i}", "messages": [{"role": "user", "content": f"question {i}"}]} for i in range(size)]


def test_the_first_count_survivors_are_kept_in_the_seeded_order(tmp_path) -> None:
    pool = _pool(60)
    out = tmp_path / "out"
    out.mkdir()
    manifest = _draw(tmp_path / "store", pool, count=10, chunk=4, out=out)
    assert manifest is not None
    survivors = [p["prompt_id"] for p in pool if survives(p["prompt_id"])]
    assert [r["prompt_id"] for r in read_jsonl(out / "samples.jsonl")] == survivors[:10]
    drawn = manifest["drawn_prompts"]
    expected = 12  # whole chunks for 10, then what the survival so far says is missing
    while sum(survives(p["prompt_id"]) for p in pool[:expected]) < 10:
        expected = next_draw(expected, sum(survives(p["prompt_id"]) for p in pool[:expected]), 10, 60, 4)
    assert drawn == expected and expected > 12  # more than one round was needed here
    sampled_survivors = sum(survives(p["prompt_id"]) for p in pool[:drawn])
    assert manifest["kept_prompts"] == 10 and manifest["surplus_prompts"] == sampled_survivors - 10
    assert manifest["accounting"]["student_generation_tokens"] == 5 * 2 * drawn  # every drawn prompt is paid for


def test_two_processes_draw_and_keep_what_one_process_does(tmp_path) -> None:
    pool = _pool(80)
    one = tmp_path / "one"
    one.mkdir()
    single = _draw(tmp_path / "a", pool, count=12, chunk=3, out=one)
    two = tmp_path / "two"
    two.mkdir()
    results: dict[int, Any] = {}

    def process(rank: int) -> None:
        results[rank] = _draw(tmp_path / "b", pool, count=12, chunk=3, rank=rank, world=2, out=two)

    threads = [threading.Thread(target=process, args=(rank,)) for rank in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results[1] is None and results[0] is not None and single is not None
    assert (two / "samples.jsonl").read_bytes() == (one / "samples.jsonl").read_bytes()
    assert results[0]["drawn_prompts"] == single["drawn_prompts"]
    assert set(results[0]["chunks"]["computed_by_process"]) == {"0", "1"}  # both took part


def test_a_source_that_runs_out_fails_saying_what_to_change(tmp_path) -> None:
    pool = _pool(9)
    kept = sum(survives(p["prompt_id"]) for p in pool)
    with pytest.raises(DataSourceError, match=f"leave only {kept} .* lower prompts.count to at most {kept}"):
        _draw(tmp_path, pool, count=kept + 1, chunk=4)


def test_held_out_prompts_come_from_the_end_and_never_overlap_what_was_drawn() -> None:
    spec = PromptSource(count=20, count_after_filters=True, max_prompt_chars=100)
    pool = load_prompts(spec).prompts  # the whole usable source, in the seeded order
    assert pool[:20] == load_prompts(spec.model_copy(update={"count_after_filters": False})).prompts
    held = load_held_out(spec, 5).prompts
    assert held == pool[::-1][:5] and load_held_out(spec, 3, skip=5).prompts == pool[::-1][5:8]
    load_held_out(spec, 5, drawn=len(pool) - 5)  # drawn up to the held-out ones: still disjoint
    with pytest.raises(DataSourceError, match="reaches the 5 held out"):
        load_held_out(spec, 5, drawn=len(pool) - 4)
    with pytest.raises(DataSourceError, match="lower the benchmark's subset"):
        load_held_out(spec, len(pool) - 19)  # the drawing takes at least `count`


def test_a_run_keeps_count_prompts_after_the_filter_and_reports_it(tmp_path, monkeypatch) -> None:
    from harness.pipeline import Pipeline
    from harness.stages import data

    monkeypatch.setattr(data, "run_samples", fake_run_samples)
    data_ = small_experiment("drawn", prompts=4, samples=2, methods=[{"name": "seqkd"}], data_parallel={"chunk": 2},
                             budget={"micro_batch": 1},
                             benchmarks=[{"name": "teacher_agreement", "subset": 2, "max_new_tokens": 2,
                                          "params": {"n": 2, "candidate_max_new_tokens": 2}}])
    data_["prompts"]["count_after_filters"] = True
    exp = parse_experiment(data_, "t")
    pipe = Pipeline(exp, tmp_path, progress=False)
    results = pipe.run()
    plan = pipe.build_plan()
    pool = plan.prompts.read()
    survivors = [p["prompt_id"] for p in pool if survives(p["prompt_id"])]
    assert sorted(plan.trainset.prompt_ids()) == sorted(survivors[:4])  # 4 remain, as counted
    drawn = plan.samples.artifact.manifest()["drawn_prompts"]
    assert len([i for i in survivors if i in {p["prompt_id"] for p in pool[:drawn]}]) >= 4
    # The teacher answered the kept prompts only (not the pool), keyed by the samples it depends on.
    teacher = next(s for s in plan.signals.values() if s.source.name == "teacher_samples")
    assert sorted(json.loads((teacher.artifact.path / "values.json").read_text())["samples"][i]["prompt_id"]
                  for i in range(4)) == sorted(survivors[:4])
    assert teacher.artifact.inputs["samples"] == plan.samples.artifact.key
    held = {p["prompt_id"] for p in load_held_out(exp.prompts, 2).prompts}
    assert not held & {p["prompt_id"] for p in pool[:drawn]}
    summary = results.provenance["training_data"]
    assert summary["sampled prompts"].startswith(f"4 kept after the sampling filter (prompts.count_after_filters): "
                                                 f"{drawn} drawn")
    assert summary["trainset"].startswith("4 prompts")


def test_the_paper_configs_plan_the_logged_432_optimizer_steps() -> None:
    """gemma-log/pad.log: 'Num examples = 55,321 ... Total optimization steps = 432' at batch 128. Counted
    after the filter, the trainset IS `count` prompts (the released MCQ filter kept all 55,321 in that log);
    counted before it, every 128 prompts the filter drops cost one step."""
    for name in ("gemma2-9b-to-2b.yaml", "llama3-8b-to-1b.yaml"):
        exp = load_experiment(LEADERBOARDS / name)
        assert exp.prompts.count_after_filters and exp.prompts.count == 55321
        assert plan_training(exp.budget, exp.prompts.count, seed=0).total_steps == 432
        # The same count drawn BEFORE the filter: 432 steps only while it drops at most 25 prompts.
        assert plan_training(exp.budget, exp.prompts.count - 25, seed=0).total_steps == 432
        assert plan_training(exp.budget, exp.prompts.count - 26, seed=0).total_steps == 431
