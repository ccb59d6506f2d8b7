"""Per-method optimizer settings and tuning under a matched search budget (harness.tuning, harness.stages.tuning).

What must hold: a method's own optimizer settings enter only its train key; every tuned method gets exactly
`tuning.trials` trials; bad searches are refused at validate with one line; the dev split is disjoint from
the training prompts and from the test items, and nothing a test benchmark evaluates enters a trial's or a
selection's inputs; the selected trial IS the first seed's test row (K trials cost K trainings + K dev
evaluations); adding a trial trains only it; selecting again trains nothing; every report says how each
row's settings were chosen.
"""

from __future__ import annotations

import copy
import csv
import json

import pytest
from helpers.experiments import small_experiment

from harness.config import parse_experiment
from harness.errors import ConfigError
from harness.pipeline import Pipeline
from harness.stages.tuning import edge_warnings, pick_best
from harness.tuning import grid, trials_for, validate_tuning

pytestmark = pytest.mark.usefixtures("one_thread")

TA = {"name": "teacher_agreement", "subset": 3, "max_new_tokens": 4, "params": {"n": 2, "candidate_max_new_tokens": 4}}
TUNING = {"trials": 2, "select_on": {"benchmark": "teacher_agreement", "metric": "rank_agreement", "subset": 3}}
LRS = [1.0e-4, 1.0e-3, 1.0e-2]


def tuned(methods=None, tuning=None, seeds=(0, 1), **extra):
    methods = methods if methods is not None else [
        {"name": "sft"},
        {"name": "dpo", "params": {"preference": "teacher_logprob"},
         "search": {"optimizer.learning_rate": LRS[:2], "params.beta": [0.1]}}]
    data = small_experiment("tune", prompts=4, samples=2, sample_tokens=4, methods=methods,
                            budget={"micro_batch": 2, "learning_rate": 1e-3, "warmup_ratio": 0.0},
                            tuning=tuning or copy.deepcopy(TUNING), seeds=list(seeds), **extra)
    data["benchmarks"] = [copy.deepcopy(TA)]
    return data


def parse(data):
    """As `pad-harness validate` and every run check a file (the search is checked beside the schema)."""
    exp = parse_experiment(data, "exp.yaml")
    validate_tuning(exp, "exp.yaml")
    return exp


# ---------------------------------------------------------------- per-method optimizer settings
def test_a_methods_own_optimizer_enters_only_its_train_key(tmp_path):
    base = small_experiment("opt", methods=[{"name": "sft"}, {"name": "dpo"}], budget={"micro_batch": 2})
    before = {s.label: s.artifact.key for s in Pipeline(parse(base), tmp_path, progress=False).plan()
              if s.kind == "train"}
    changed = copy.deepcopy(base)
    changed["methods"][1]["optimizer"] = {"learning_rate": 5e-7, "schedule": "linear", "warmup_ratio": 0.0}
    pipe = Pipeline(parse(changed), tmp_path, progress=False)
    after = {s.label: s.artifact.key for s in pipe.plan() if s.kind == "train"}
    assert after["sft-seed0"] == before["sft-seed0"]
    assert after["dpo-seed0"] != before["dpo-seed0"]
    train = next(s for s in pipe.plan() if s.label == "dpo-seed0")
    assert (train.budget.learning_rate, train.budget.schedule, train.budget.warmup_ratio) == (5e-7, "linear", 0.0)
    assert train.budget.effective_batch == parse(changed).budget.effective_batch  # the matched part is shared


def test_what_is_matched_cannot_be_set_per_method():
    data = small_experiment("opt", methods=[{"name": "sft", "optimizer": {"learning_rate": 1e-5, "max_steps": 9}}],
                            budget={"micro_batch": 2})
    with pytest.raises(ConfigError, match=r"max_steps.*cannot be set per method.*budget"):
        parse(data)


# ---------------------------------------------------------------- the search budget
def test_every_tuned_method_gets_exactly_the_trials_asked():
    exp = parse(tuned(methods=[
        {"name": "sft", "search": {"optimizer.learning_rate": LRS, "optimizer.warmup_ratio": [0.0, 0.1]}},
        {"name": "dpo", "search": {"optimizer.learning_rate": LRS[:2], "params.beta": [0.1, 0.2]}}],
        tuning={**TUNING, "trials": 4}))
    sft, dpo = (trials_for(spec, exp.tuning) for spec in exp.methods)
    assert len(sft) == len(dpo) == 4
    assert len(grid(exp.methods[0].search)) == 6  # subsampled to 4 with the fixed seed: the same every time
    assert [t.settings for t in sft] == [t.settings for t in trials_for(exp.methods[0], exp.tuning)]
    assert len({json.dumps(t.settings, sort_keys=True) for t in sft}) == 4
    assert [t.settings for t in dpo] == grid(exp.methods[1].search)  # exactly the grid: all of it


@pytest.mark.parametrize(("search", "tuning", "message"), [
    ({"optimizer.learning_rate": LRS[:1]}, None, r"1 grid points, fewer than tuning.trials \(2\)"),
    ({"optimizer.epochs": [1, 2]}, None, r"unknown key 'optimizer.epochs'; allowed: optimizer.learning_rate"),
    ({"params.no_such": [1, 2]}, None, r"unknown key 'params.no_such'"),
    ({"optimizer.learning_rate": [1e-3, -1.0]}, None, r"learning_rate=-1.0.*greater than 0"),
    ({"params.beta": [0.1, -3.0]}, None, r"beta"),
    ({"params.preference": ["teacher_logprob", "mcq"]}, None, r"change the signals or the prompt filter"),
    ({"optimizer.learning_rate": LRS[:2]}, {**TUNING, "select_on": {"benchmark": "ifeval"}}, r"ifeval.*no dev split"),
    ({"optimizer.learning_rate": LRS[:2]}, {**TUNING, "select_on": {"benchmark": "teacher_agreement",
                                                                    "metric": "accuracy"}},
     r"records no metric 'accuracy'; choose one of teacher_loglik"),
])
def test_bad_searches_are_refused_at_validate_with_one_line(search, tuning, message):
    data = tuned(methods=[{"name": "dpo", "params": {"preference": "teacher_logprob"}, "search": search}],
                 tuning=tuning)
    with pytest.raises(ConfigError, match=message) as err:
        parse(data)
    assert "\n" not in str(err.value)


def test_a_search_without_a_tuning_section_is_refused():
    data = tuned()
    del data["tuning"]
    with pytest.raises(ConfigError, match=r"methods.1 \(dpo\).search: a search needs the experiment's `tuning:`"):
        parse(data)


def test_a_subsampled_grid_tries_every_value_the_trials_allow():
    from harness.tuning import subsample

    points = grid({"optimizer.learning_rate": [3e-5, 1e-4, 3e-4, 1e-3], "params.beta": [0.1, 0.5]})
    for seed in range(20):
        picked = subsample(points, 4, seed)
        assert {p["optimizer.learning_rate"] for p in picked} == {3e-5, 1e-4, 3e-4, 1e-3}, seed
        assert {p["params.beta"] for p in picked} == {0.1, 0.5}, seed
        assert picked == [p for p in points if p in picked]  # grid order kept
    assert subsample(points, 4, 0) == subsample(points, 4, 0)
    assert len({json.dumps(subsample(points, 4, s)) for s in range(20)}) > 1  # the seed does choose


def test_selection_rules():
    assert pick_best([0.1, 0.3, 0.3, None], higher_is_better=True) == 1  # ties: the first
    assert pick_best([0.1, 0.3, float("nan")], higher_is_better=False) == 0
    assert pick_best([None, None], higher_is_better=True) == 0
    settings = [{"optimizer.learning_rate": v, "params.beta": 0.1} for v in LRS]
    assert edge_warnings(settings, 1) == []
    assert edge_warnings(settings, 2) == ["optimizer.learning_rate=0.01 is the largest value tried: widen the range"]
    assert edge_warnings(settings, 0) == ["optimizer.learning_rate=0.0001 is the smallest value tried: widen the range"]


# ---------------------------------------------------------------- dev / test separation
def _ids(pipe, bench):
    return {it["id"] for it in bench.load().items}


def test_dev_split_is_disjoint_from_training_and_test_and_no_test_item_enters_selection(tmp_path):
    from harness.integrity import keys_in
    from harness.prompts import load_prompts

    exp = parse(tuned())
    pipe = Pipeline(exp, tmp_path, progress=False)
    plan = pipe.build_plan(project_selections=True)
    dev_ids = _ids(pipe, pipe.ctx.dev_benchmark())
    test_ids = _ids(pipe, pipe.ctx.benchmark(0))
    train_ids = {p["prompt_id"] for p in load_prompts(exp.prompts).prompts}
    assert len(dev_ids) == 3 and len(test_ids) == 3
    assert not dev_ids & test_ids and not dev_ids & train_ids and not test_ids & train_ids

    # Nothing a test benchmark evaluates is upstream of a selection: walk every key it reads, transitively.
    by_key = {s.artifact.key: s for s in plan.steps}
    test_keys = {s.artifact.key for s in plan.steps if s.kind in ("answers", "judgements")
                 and not s.label.endswith("-dev")}
    for selection in plan.selections.values():
        seen, todo = set(), [selection.artifact.key]
        while todo:
            key = todo.pop()
            if key in seen or key not in by_key:
                continue
            seen.add(key)
            todo += keys_in(by_key[key].artifact.inputs)
        assert not seen & test_keys
        assert any(by_key[k].kind == "judgements" for k in seen)  # it does read the dev judgements


# ---------------------------------------------------------------- end to end
@pytest.mark.slow  # end to end on tiny models: trials, dev evaluation, selection, test rows, reports
def test_tuning_end_to_end(tmp_path):
    exp = parse(tuned())
    first = Pipeline(exp, tmp_path, progress=False)
    results = first.run()
    plan = first.build_plan()
    assert not plan.awaiting_selection
    selection = plan.selections["dpo"].selection()
    assert len(selection["trials"]) == 2 and selection["selected"] in (0, 1)
    assert all(isinstance(t["value"], float) for t in selection["trials"])
    chosen = selection["selected_settings"]

    # The selected trial IS the first seed's test row: K trials = K trainings, plus the other seeds.
    trains = sorted(p.name for p in (tmp_path / "artifacts" / "train").iterdir())
    assert len([t for t in trains if t.startswith("dpo-seed0-")]) == 2
    assert len([t for t in trains if t.startswith("dpo-seed1-")]) == 1
    dpo_rows = [r for r in plan.rows if r.row == "dpo"]
    assert dpo_rows[0].train.key == selection["trials"][selection["selected"]]["train_key"]
    assert dpo_rows[0].train_stage.budget.learning_rate == chosen["optimizer.learning_rate"]

    # Every format says how each row's settings were chosen.
    rows = {r.row: r for r in results.rows}
    assert rows["dpo"].tuning == {"tuned": True, "trials": 2, "selected_settings": chosen}
    assert rows["sft"].tuning == {"tuned": False} and rows["sft"].optimizer["learning_rate"] == 1e-3
    md = (tmp_path / "LEADERBOARD.md").read_text()
    assert "| dpo | 2 | tuned (2 trials) |" in md and "| sft | 2 | untuned |" in md
    assert "### Tuning: dpo: 2 trials, selected on teacher_agreement rank_agreement" in md
    html = (tmp_path / "report.html").read_text()
    assert 'id="tuning-dpo"' in html and "tuned (2 trials)" in html
    csv_rows = {r["row"]: r for r in csv.DictReader((tmp_path / "leaderboard.csv").open())}
    assert csv_rows["dpo"]["tuning"] == "tuned (2 trials)"
    assert float(csv_rows["dpo"]["optimizer.learning_rate"]) == chosen["optimizer.learning_rate"]
    lb = json.loads((tmp_path / "leaderboard.json").read_text())
    assert lb["tuning"]["dpo"]["selected_settings"] == chosen

    # Selecting again trains nothing; a third trial trains only that trial (and what it changes).
    sel_dir = plan.selections["dpo"].artifact.path
    import shutil

    shutil.rmtree(sel_dir)
    again = Pipeline(exp, tmp_path, progress=False)
    to_run = [s for s in again.build_plan().steps if not s.done]
    assert [s.kind for s in to_run] == ["selection"]
    more = tuned(methods=[{"name": "sft"}, {"name": "dpo", "params": {"preference": "teacher_logprob"},
                                             "search": {"optimizer.learning_rate": LRS, "params.beta": [0.1]}}],
                 tuning={**TUNING, "trials": 3})
    grown = Pipeline(parse(more), tmp_path, progress=False).build_plan()
    new_trains = [s for s in grown.steps if s.kind == "train" and not s.done]
    assert [s.detail for s in new_trains] == ["trial 3/3: optimizer.learning_rate=0.01, params.beta=0.1"]


def test_the_offline_default_trains_each_method_as_one_of_smol_tuneds_trials():
    """leaderboards/smol.yaml states that each method runs at the settings smol-tuned.yaml selected: each of
    its method entries must BE one of that preset's trials (same method, params and optimizer settings), and
    the two files must share everything a trial's training depends on."""
    from pathlib import Path

    from harness.config import load_experiment
    from harness.tuning import trials_for

    root = Path(__file__).resolve().parents[1] / "leaderboards"
    default, tuned_exp = load_experiment(root / "smol.yaml"), load_experiment(root / "smol-tuned.yaml")
    for field in ("teacher", "student", "prompts", "sampling", "signals", "budget", "seeds"):
        assert getattr(default, field) == getattr(tuned_exp, field), field
    assert tuned_exp.tuning is not None
    searched = {m.row_name: m for m in tuned_exp.methods}
    for method in default.methods:
        trials = [t.spec.model_dump(exclude={"search"}) for t in trials_for(searched[method.row_name], tuned_exp.tuning)]
        assert method.model_dump(exclude={"search"}) in trials, method.row_name
