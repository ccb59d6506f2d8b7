"""Arena-Hard-Auto (`arena_hard`): v0.1 and v2.0, judged pairwise against a baseline as lmarena does it.

Every question is judged twice with the positions swapped (game 1: baseline = A, model = B; game 2: the
reverse), with the official system prompt (the creative-writing category of v2.0 has its own), the
official user template and the official verdict regexes (all in `formats`). Questions and baseline answers
are found by `prompts`; scoring lives in `scoring`, scoring arena-hard-auto's own judgement files in
`official`, and a row's answers and judgements written as its files (and its answers files read) in `files`.
Style control fitted on this model's games alone is labelled "single-model style control";
`params.style_control_pool` names official judgements to fit jointly with, as the leaderboard does. Answer
tokens are counted with the version's official tiktoken encoding when its BPE file is available, else
approximately, and then reported as `avg_tokens_approx`, never as `avg_tokens`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.benchmarks.arena_hard.files import Setting, export_files, label_approximate_tokens, read_answers
from harness.benchmarks.arena_hard.formats import (
    CONTINUE_PROMPT,
    JUDGE_SETTINGS,
    OFFICIAL_JUDGE,
    PROMPT_TEMPLATE,
    VERDICT_PREFILL,
    extract_verdict_v01,
    extract_verdict_v2,
)
from harness.benchmarks.arena_hard.official import load_style_pool, score_official_file
from harness.benchmarks.arena_hard.prompts import load_arena_hard, parse_answer, parse_question, read_rows
from harness.benchmarks.arena_hard.scoring import (
    OFFICIAL_ENCODING,
    answer_metadata,
    file_metadata,
    is_official_counter,
    score_rows,
)
from harness.benchmarks.base import (
    AnswerModel,
    Benchmark,
    BenchmarkData,
    OfficialExport,
    ReportColumn,
    ScoreResult,
    verdict_prefill,
)
from harness.errors import JudgeError
from harness.judges.base import Judge, JudgeRequest

# The answer length each version's own pipeline gives the models that answer (arena-hard-auto, commit 196f6b8).
# v0.1: config/gen_answer_config.yaml `max_tokens: 4096` (that file until commit 9a1d386 switched it to v2.0).
# v2.0: gen_answer_config.yaml sets no length; gen_answer.py passes each model's config/api_config.yaml entry,
# where both non-reasoning answer models, gpt-4o-mini-2024-07-18 and the local-inference example gemma-3-27b-it
# (an open model behind an OpenAI-compatible server, as a student would be served), have `max_tokens: 8196`.
ANSWER_MAX_TOKENS = {"v0.1": 4096, "v2.0": 8196}


class ArenaHardParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    version: Literal["v0.1", "v2.0"] = "v2.0"
    """V2.0 ships offline; the PAD paper used v0.1."""
    category: Literal["hard_prompt", "creative_writing"] = "hard_prompt"
    """V2.0 only."""
    baseline: str | None = None
    """Default: the official baseline of the version/category."""
    judge_max_tokens: int | None = Field(None, ge=1)
    """Default 4096 (v0.1 config) / 16000 (v2.0 gpt-4.1)."""
    judge_temperature: float = Field(0.0, ge=0.0)
    """The judge's temperature (arena-hard-auto: 0)."""
    judge_attempts: int | None = Field(None, ge=1)
    """Default 2 for v0.1, 1 for v2.0 (as upstream)."""
    strong_weight: int = Field(3, ge=1)
    """Battles a strong verdict (A>>B, B>>A) counts for (arena-hard-auto: 3)."""
    bootstrap_rounds: int = Field(100, ge=1)
    """Bootstrap rounds of the confidence interval (arena-hard-auto: 100)."""
    seed: int = 42
    """Seed of the bootstrap (arena-hard-auto: 42)."""
    style_control: bool = False
    """Also score with style control (length and markdown), as arena-hard-auto's show_result.py
    --style-control."""
    style_features: Literal["both", "length", "markdown"] = "both"
    """The style features controlled for: answer length, markdown (headers, lists, bold), or both."""
    style_control_pool: str | None = None
    """Arena-hard-auto fits style coefficients jointly over every model's games. A folder of its judgement
    files (data/<bench>/model_judgment/<judge>/, answers in data/<bench>/model_answer/) to fit jointly
    with; without one the fit uses this model's games only and is labelled "single-model style control"."""
    verdict_prefill: bool = False
    """Not arena-hard-auto's protocol: start the judge's reply with "My final verdict is: [[" so it can only
    continue with a verdict label. For small local judges; the report says it was used."""
    data_path: str | None = None
    """A folder laid out like arena-hard-auto's data/arena-hard-<version>/; else the installed package (v2.0),
    else the hub."""

    @model_validator(mode="after")
    def _pool_needs_style_control(self) -> ArenaHardParams:
        if self.style_control_pool and not self.style_control:
            raise ValueError("style_control_pool is only used with style_control: true; set both or neither")
        return self


class ArenaHard(Benchmark):
    """Arena-Hard-Auto (v0.1 or v2.0): pairwise judgements against a baseline's answers, both orders, with
    the official bootstrap, style control and Bradley-Terry scores."""

    name: ClassVar[str] = "arena_hard"
    title: ClassVar[str] = "Arena-Hard"
    Params: ClassVar[type[BaseModel]] = ArenaHardParams
    needs_judge: ClassVar[bool] = True
    headline: ClassVar[str] = "score"
    decoding: ClassVar[dict[str, Any]] = {"temperature": 0.0, "turns": 1,
                                          "note": "greedy, as arena-hard-auto's gen_answer temperature 0"}
    default_max_new_tokens: ClassVar[int] = 4096  # v0.1; v2.0: ANSWER_MAX_TOKENS (`__init__`)
    answers_version: ClassVar[int] = 1  # 1: v2.0 answers up to 8196 tokens, not v0.1's 4096
    params: ArenaHardParams

    def __init__(self, params: BaseModel | dict[str, Any] | None = None, subset: int | None = None,
                 max_new_tokens: int | None = None) -> None:
        super().__init__(params, subset, max_new_tokens)
        if max_new_tokens is None:  # the answer length of the version's own pipeline
            self.max_new_tokens = ANSWER_MAX_TOKENS[self.params.version]

    def official_judge(self) -> str | None:
        return OFFICIAL_JUDGE[self.params.version]  # v0.1: gpt-4-1106-preview, v2.0: gpt-4.1

    @classmethod
    def columns(cls) -> tuple[ReportColumn, ...]:
        return (
            ReportColumn("score", "Score (%)", ci_metrics=("ci_low", "ci_high"), headline=True),
            ReportColumn("avg_tokens", "Tokens", digits=0, kind="count"),
            # Counted without the official tiktoken BPE (offline): never shown as arena-hard-auto's count.
            ReportColumn("avg_tokens_approx", "Tokens (approx.)", digits=0, kind="count"),
        )

    # ------------------------------------------------------------------------------------ settings
    @property
    def setting_key(self) -> str:
        return "arena-hard-v0.1" if self.params.version == "v0.1" else self.params.category

    @property
    def baseline(self) -> str:
        return self.params.baseline or JUDGE_SETTINGS[self.setting_key]["baseline"]

    @property
    def system_prompt(self) -> str:
        return JUDGE_SETTINGS[self.setting_key]["system_prompt"]

    @property
    def encoding(self) -> str:
        """The tiktoken encoding the version's official answer token counts use."""
        return OFFICIAL_ENCODING[self.params.version]

    # ------------------------------------------------------------------------------------- stages
    def load(self) -> BenchmarkData:
        folder, source = load_arena_hard(self.params.version, self.baseline, self.params.data_path)
        questions = [parse_question(q) for q in read_rows(folder / "question.jsonl")]
        if self.params.version == "v2.0":
            questions = [q for q in questions if q["category"] == self.params.category]
        answers = {qid: (text, meta) for qid, _m, text, meta in
                   (parse_answer(a) for a in read_rows(folder / "model_answer" / f"{self.baseline}.jsonl"))}
        missing = [q["id"] for q in questions if q["id"] not in answers]
        # Upstream skips questions the baseline did not answer (gemini-2.0-flash misses two hard prompts).
        items = [{**q, "baseline_answer": answers[q["id"]][0],
                  "baseline_metadata": file_metadata(answers[q["id"]][1])
                  or answer_metadata(answers[q["id"]][0], self.encoding)}
                 for q in questions if q["id"] in answers]
        if self.subset is not None:
            items = items[: self.subset]
        digest = hashlib.sha256(json.dumps([[i["id"], i["prompt"], i["baseline_answer"]] for i in items],
                                           ensure_ascii=False).encode()).hexdigest()[:16]
        note = f"; {len(missing)} questions without a baseline answer skipped" if missing else ""
        return BenchmarkData(items=items, source=source + note,
                             version=f"arena-hard-{self.params.version}:{self.setting_key}:{digest}")

    def greedy_conversations(self, data: BenchmarkData) -> list[list[dict[str, str]]]:
        return [[{"role": "user", "content": item["prompt"]}] for item in data.items]

    def generate(self, model: AnswerModel, data: BenchmarkData) -> list[dict[str, Any]]:
        outputs = model.answer(self.greedy_conversations(data), self.max_new_tokens, progress="arena_hard answers")
        records = []
        for item, out in zip(data.items, outputs, strict=True):
            meta = answer_metadata(out.text, self.encoding)
            records.append({"id": item["id"], "category": item["category"], "output": out.text,
                            "finished": out.finished, "token_len": meta["token_len"], "metadata": meta})
        return records

    def _request(self, question: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
        user = PROMPT_TEMPLATE.format(QUESTION=question, ANSWER_A=answer_a, ANSWER_B=answer_b)
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}]

    def judge(self, judge: Judge | None, data: BenchmarkData, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if judge is None:
            raise JudgeError("arena_hard needs a judge: set `judge:` in the experiment file")
        v01 = self.params.version == "v0.1"
        max_tokens = self.params.judge_max_tokens or (4096 if v01 else 16000)
        attempts = self.params.judge_attempts or (2 if v01 else 1)
        by_id = {a["id"]: a for a in answers}
        items = [i for i in data.items if i["id"] in by_id]
        convs: list[list[dict[str, str]]] = []
        for item in items:
            text = _output_text(by_id[item["id"]])
            convs.append(self._request(item["prompt"], item["baseline_answer"], text))  # game 1
            convs.append(self._request(item["prompt"], text, item["baseline_answer"]))  # game 2: swapped
        texts = [""] * len(convs)
        pending = list(range(len(convs)))
        prefill = verdict_prefill(judge, "arena_hard", VERDICT_PREFILL if self.params.verdict_prefill else None)
        for attempt in range(attempts):
            requests = [JudgeRequest.chat(convs[k], max_tokens=max_tokens, temperature=self.params.judge_temperature,
                                          prefill=prefill) for k in pending]
            replies = judge.complete(requests, progress=f"arena_hard judge (attempt {attempt + 1})")
            retry = []
            for k, reply in zip(pending, replies, strict=True):
                reply_text = (prefill or "") + reply.text  # the judgement as the judge "wrote" it
                if v01:  # upstream accumulates every attempt in `judgment` and asks to continue
                    texts[k] += "\n" + reply_text
                    if extract_verdict_v01(texts[k])[1]:
                        convs[k] = convs[k] + [{"role": "assistant", "content": reply_text},
                                               {"role": "user", "content": CONTINUE_PROMPT}]
                        retry.append(k)
                else:  # v2.0 has one attempt; extra attempts (our option) simply ask again
                    texts[k] = reply_text
                    if extract_verdict_v2(texts[k]) is None:
                        retry.append(k)
            pending = retry
            if not pending:
                break
        records = []
        for n, item in enumerate(items):
            model_meta = by_id[item["id"]].get("metadata") or answer_metadata(_output_text(by_id[item["id"]]),
                                                                             self.encoding)
            base_meta = item["baseline_metadata"]
            if model_meta.get("token_counter") != base_meta.get("token_counter") and not is_official_counter(
                    model_meta.get("token_counter"), self.params.version):
                # Style control compares the two lengths: count the baseline's answer the same way.
                base_meta = answer_metadata(item["baseline_answer"], self.encoding)
            games = []
            for g in (0, 1):
                text = texts[2 * n + g]
                label = extract_verdict_v01(text)[0] if v01 else extract_verdict_v2(text)
                games.append({"score": label, "judgment": text, "user_prompt": convs[2 * n + g][1]["content"]})
            records.append({"id": item["id"], "category": item["category"], "version": self.params.version,
                            "baseline": self.baseline, "games": games,
                            "metadata": {"model": model_meta, "baseline": base_meta}})
        return records

    def score(self, judgements: list[dict[str, Any]]) -> ScoreResult:
        p = self.params
        pool = None
        if p.style_control and p.style_control_pool:
            pool = load_style_pool(Path(p.style_control_pool).expanduser(), p.version, p.category, self.baseline,
                                   p.strong_weight)
        result = score_rows(judgements, p.version, p.strong_weight, p.bootstrap_rounds, p.seed,
                            p.style_control, p.style_features, pool)
        if p.verdict_prefill:
            result.notes.append(f"verdict prefilled: every judge reply was started with {VERDICT_PREFILL!r} "
                                f"(not arena-hard-auto's protocol, where the judge answers and explains first)")
        return result

    @classmethod
    def score_official(cls, path: Path, style_control: bool = False, bootstrap_rounds: int = 100,
                       seed: int = 42, style_pool: Path | None = None) -> ScoreResult:
        """Score arena-hard-auto's `model_judgment/<judge>/<model>.jsonl` (v0.1 or v2.0 format).

        Mean answer tokens (and style features, for style control) come from the sibling
        `model_answer/<model>.jsonl` and `model_answer/<baseline>.jsonl` when the official layout is there.
        `style_pool`: a model_judgment/<judge>/ folder whose other models are fitted jointly (as the leaderboard).
        """
        result = score_official_file(Path(path), style_control, bootstrap_rounds, seed, style_pool)
        return label_approximate_tokens(Path(path), result)  # an export's approximate count stays labelled so

    # ------------------------------------------------------------------------------------- interop
    @property
    def file_setting(self) -> Setting:
        """What this benchmark's official files depend on (`files`)."""
        label = f"arena_hard {self.params.version}" + (f" ({self.params.category})" if self.params.version == "v2.0"
                                                       else "")
        return Setting(self.params.version, self.baseline, self.encoding, label)

    def export_official(self, data: BenchmarkData, answers: list[dict[str, Any]],
                        judgements: list[dict[str, Any]] | None, export: OfficialExport) -> list[Path]:
        """arena-hard-auto's `model_answer/<model>.jsonl` in this version's schema and, when judged,
        `model_judgment/<judge>/<model>.jsonl` with the baseline's `model_answer/<baseline>.jsonl` beside it
        (style control reads both answers' metadata there): `score_official` of the judgement file gives
        `score`'s metrics."""
        return export_files(self.file_setting, data, answers, judgements, export)

    def read_official_answers(self, path: Path, data: BenchmarkData) -> list[dict[str, Any]]:
        """`generate`'s records from arena-hard-auto's `model_answer/<model>.jsonl` (v2.0's uid/messages schema
        or v0.1's question_id/choices one); `finished` where an export wrote it, else None."""
        return read_answers(Path(path), data, self.file_setting)


def _output_text(answer: dict[str, Any]) -> str:
    out = answer["output"]
    return out[-1] if isinstance(out, list) else str(out)

