"""AlpacaEval's own files for one row: `model_outputs.json`, `annotations.json` and `leaderboard.csv` as
alpaca-eval 0.6.6 writes them (`pad-harness export`), and a `model_outputs.json` read back into the answer
records `AlpacaEval2.generate` writes (an external row).

The formats, from the installed alpaca-eval 0.6.6 (checked by running its `main.evaluate` with a stub decoder,
tests/test_export_alpaca_lm_eval.py):
* model_outputs.json: a JSON list of {instruction, output, generator, dataset} (the schema of the repository's
  results/<model>/model_outputs.json), read by `utils.load_or_convert_to_dataframe` and joined to the reference
  outputs ON `instruction` (`PairwiseAnnotator.annotate_head2head`, keys_to_merge = input_keys =
  ("instruction",)). Other keys are carried along unread: the merge copies them into annotations.json. We add
  one, `finished` (whether the model ended its answer; a scalar, because `annotate_head2head` calls
  `drop_duplicates()` on the merged frame, which cannot hash a nested object).
* annotations.json: `main.evaluate` writes `convert_to_dataframe(annotations).to_json(orient="records",
  indent=2)`: the merged columns (instruction, output_1, generator_1, dataset, output_2, generator_2, then the
  model outputs' extra keys), `annotator`, the annotation `preference`, and the annotator's stored outputs
  `preference_{date,version,raw_completion,price_per_example,time_per_example}` (annotators/base.py
  `BaseAnnotator(other_output_keys_to_keep=...)`, prefixed by `SingleAnnotator(prfx_to_completion_cols=
  "{annotation_column}_")`). The repository's published annotations predate that prefix (raw_completion,
  price_per_example, time_per_example); no metric reads either spelling. Rows never sent to the judge (an
  output identical to the reference) have all five null, as `_postprocess_and_store_`'s outer merge leaves them.
* leaderboard.csv: `df_leaderboard.to_csv(output_path / "leaderboard.csv")`, the model name as the unnamed
  index column, with the columns of the published leaderboards/data_AlpacaEval_2/
  weighted_alpaca_eval_gpt4_turbo_leaderboard.csv; `utils.get_precomputed_leaderboard` reads it back.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from harness.errors import DataSourceError, HarnessError
from harness.store import write_text_atomic
from harness.textfiles import check_is_file, read_utf8

MODEL_OUTPUTS = "model_outputs.json"
ANNOTATIONS = "annotations.json"
LEADERBOARD = "leaderboard.csv"
FINISHED = "finished"  # our extra key in model_outputs.json (and, carried by alpaca_eval's merge, annotations)
# main.evaluate(current_leaderboard_mode="community"): the mode of a model its user evaluated themselves.
LEADERBOARD_MODE = "community"
# The columns of alpaca_eval's AlpacaEval 2 leaderboard CSVs (leaderboards/data_AlpacaEval_2/*.csv), in order.
LEADERBOARD_COLUMNS = ("win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total",
                       "discrete_win_rate", "mode", "avg_length", "length_controlled_winrate", "lc_standard_error")
# What the annotator stores beside each preference (see the module doc), in a fixed order: alpaca_eval's own
# order varies from run to run (`_get_other_output_keys_to_keep` returns `list(set(...))`).
ANNOTATOR_OUTPUTS = ("preference_date", "preference_version", "preference_raw_completion",
                     "preference_price_per_example", "preference_time_per_example")
OUTPUTS_SCHEMA = ("alpaca_eval's model_outputs.json: a JSON list of objects with 'instruction' and 'output' "
                  "strings (and 'generator', 'dataset'), one per AlpacaEval 2 instruction")


# ------------------------------------------------------------------------------------------------ export
def _by_id(records: list[dict[str, Any]], items: list[dict[str, Any]], what: str) -> dict[str, dict[str, Any]]:
    """The run's records keyed by item id; an item without one is a damaged run dir, said plainly."""
    by_id = {r["id"]: r for r in records}
    missing = next((item["id"] for item in items if item["id"] not in by_id), None)
    if missing is not None:
        raise HarnessError(f"alpaca_eval2: the run's {what} have no record for item {missing!r}; rerun "
                           "`pad-harness run` to complete them, then export")
    return by_id


def model_output_records(items: list[dict[str, Any]], answers: list[dict[str, Any]],
                         model: str) -> list[dict[str, Any]]:
    """One model_outputs.json record per item, in item order (the reference's order, which alpaca_eval keeps)."""
    by_id = _by_id(answers, items, "answers")
    # `dataset` must be the reference's own: alpaca_eval merges equal columns into one, unequal ones into
    # dataset_1 / dataset_2.
    return [{"instruction": item["instruction"], "output": by_id[item["id"]]["output"], "generator": model,
             "dataset": item["dataset"], FINISHED: by_id[item["id"]].get("finished")} for item in items]


def raw_completion(judgement: dict[str, Any]) -> dict[str, Any] | None:
    """The judge's reply as alpaca_eval's `openai_completions` stores it (`choice.model_dump()` plus `text`),
    from what the run kept: the text and the first token's top log-probs. alpaca_eval's `logprob_parser` reads
    `logprobs.content[0].top_logprobs` of it, so the stored preference can be re-parsed from this. The rest of
    the OpenAI choice (finish_reason, index, message, total_tokens, token bytes) is not recorded by the run and
    is left out. None for a pair never sent to the judge."""
    text = judgement.get("raw_completion")
    if text is None:
        return None
    top = judgement.get("top_logprobs") or {}
    content = [{"token": text, "logprob": top.get(text),
                "top_logprobs": [{"token": token, "logprob": logprob} for token, logprob in top.items()]}]
    return {"text": text, "logprobs": {"content": content} if top else None}


def annotation_record(judgement: dict[str, Any], answer: dict[str, Any], model: str) -> dict[str, Any]:
    """One annotations.json row, its keys in the order alpaca_eval 0.6.6 writes them (module doc)."""
    return {
        "instruction": judgement["instruction"], "output_1": judgement["output_1"],
        "generator_1": judgement["generator_1"], "dataset": judgement["dataset"],
        "output_2": judgement["output_2"], "generator_2": model,
        FINISHED: answer.get("finished"),  # carried over from model_outputs.json by alpaca_eval's merge
        "annotator": judgement["annotator"],
        "preference": judgement["preference"],  # null where unparsable, as alpaca_eval leaves a NaN annotation
        # When the judge answered, and with which alpaca_eval, is not recorded by the run (it judged through the
        # harness's own client, not alpaca_eval): null, as alpaca_eval writes for a row it did not annotate.
        "preference_date": None, "preference_version": None,
        # Kept for an unparsable reply too (alpaca_eval drops its completion there): it shows what went wrong.
        "preference_raw_completion": raw_completion(judgement),
        # The judgement records keep no tokens, price or time per call: null, as for a row never annotated.
        "preference_price_per_example": None, "preference_time_per_example": None,
    }


def annotation_records(items: list[dict[str, Any]], answers: list[dict[str, Any]],
                       judgements: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    """annotations.json rows in item order (alpaca_eval keeps the reference's order; the LC GLM looks each
    instruction's difficulty up by its row)."""
    answer_by_id = _by_id(answers, items, "answers")
    judgement_by_id = _by_id(judgements, items, "judgements")
    return [annotation_record(judgement_by_id[item["id"]], answer_by_id[item["id"]], model) for item in items]


def _csv_cell(value: Any) -> Any:
    """pandas' `to_csv` cell: an empty cell for a missing value (None/NaN), the value's repr otherwise."""
    return "" if value is None else value


def leaderboard_csv(model: str, metrics: dict[str, Any]) -> str:
    """alpaca_eval's leaderboard.csv with this row's line: the run's metrics under the leaderboard's columns."""
    values = {**metrics, "mode": LEADERBOARD_MODE}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["", *LEADERBOARD_COLUMNS])
    writer.writerow([model, *(_csv_cell(values.get(column)) for column in LEADERBOARD_COLUMNS)])
    return out.getvalue()


def write_json(path: Path, records: list[dict[str, Any]]) -> Path:
    write_text_atomic(path, json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    return path


def write_leaderboard(path: Path, model: str, metrics: dict[str, Any]) -> Path:
    write_text_atomic(path, leaderboard_csv(model, metrics))
    return path


# ------------------------------------------------------------------------------------------------ import
class _BadRecord(Exception):
    """What is wrong with one record of a model_outputs.json (the caller names the file and the record)."""


def _load_records(path: Path) -> list[Any]:
    check_is_file(path, "AlpacaEval model outputs file", DataSourceError)
    try:
        records = json.loads(read_utf8(path, "AlpacaEval model outputs file", DataSourceError))
    except ValueError as exc:
        raise DataSourceError(f"{path}: not valid JSON ({exc}); expected {OUTPUTS_SCHEMA}") from None
    if not isinstance(records, list):
        raise DataSourceError(f"{path}: a JSON {type(records).__name__}, not a list; expected {OUTPUTS_SCHEMA}")
    return records


def _finished(record: dict[str, Any]) -> bool | None:
    value = record.get(FINISHED)
    if value is not None and not isinstance(value, bool):
        raise _BadRecord(f"'{FINISHED}' is {value!r}; it must be true, false or null")
    return value


def _answer_record(record: Any, by_instruction: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`generate`'s record of one item from one model_outputs.json record matched by its instruction."""
    if not isinstance(record, dict):
        raise _BadRecord(f"is a JSON {type(record).__name__}, not an object")
    for key in ("instruction", "output"):
        if not isinstance(record.get(key), str):
            raise _BadRecord(f"has no '{key}' string")
    item = by_instruction.get(record["instruction"])
    if item is None:
        raise _BadRecord(f"instruction {record['instruction'][:80]!r} is not one of the {len(by_instruction)} "
                         "AlpacaEval 2 instructions this run evaluates (another benchmark's file, or outputs "
                         "for instructions beyond the benchmark's `subset`?)")
    answer = {"id": item["id"], "instruction": item["instruction"], "output": record["output"],
              "finished": _finished(record)}
    if isinstance(record.get("generator"), str):
        answer["generator"] = record["generator"]
    return answer


def read_model_outputs(path: Path, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The answer records of `items` (in their order) from an alpaca_eval model_outputs.json, matched by
    instruction as alpaca_eval matches them. Bad input is ONE `DataSourceError` naming the file and the first
    bad record: unreadable JSON, not a list of objects, a record without instruction/output, an instruction not
    among the items, one answered twice, or an item not answered."""
    path = Path(path)
    by_instruction = {item["instruction"]: item for item in items}
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    for k, record in enumerate(_load_records(path)):
        try:
            answer = _answer_record(record, by_instruction)
        except _BadRecord as exc:
            raise DataSourceError(f"{path}: record {k} {exc}; expected {OUTPUTS_SCHEMA}") from None
        if answer["id"] in found:
            raise DataSourceError(f"{path}: record {k} answers instruction {answer['instruction'][:80]!r} again "
                                  f"(first answered by record {found[answer['id']][0]}); keep one output per "
                                  "instruction")
        found[answer["id"]] = (k, answer)
    for n, item in enumerate(items):
        if item["id"] not in found:
            raise DataSourceError(f"{path}: no output for instruction {item['instruction'][:80]!r} (item {n} of "
                                  f"the {len(items)} AlpacaEval 2 items this run evaluates); the file must answer "
                                  "every one")
    return [found[item["id"]][1] for item in items]
