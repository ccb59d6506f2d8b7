"""The artifact store: keys depend on exactly the inputs; writes are atomic; interrupted writes vanish."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.store import CHECKSUM, ArtifactStore, hash_inputs


def test_key_depends_on_inputs_not_their_order():
    assert hash_inputs({"a": 1, "b": [1, 2]}) == hash_inputs({"b": [1, 2], "a": 1})
    assert hash_inputs({"a": 1}) != hash_inputs({"a": 2})


def test_finished_artifact_is_done_and_keeps_manifest(tmp_path):
    store = ArtifactStore(tmp_path)
    art = store.artifact("samples", "samples", {"x": 1})
    assert not art.done
    with store.writing(art) as out:
        (out / "data.txt").write_text("hello")
    assert art.done and (art.path / "data.txt").read_text() == "hello"
    manifest = art.manifest()
    assert manifest["key"] == art.key and manifest["inputs"] == {"x": 1} and "wall_time_s" in manifest


def test_interrupted_write_leaves_nothing_and_next_run_cleans_up(tmp_path):
    store = ArtifactStore(tmp_path)
    art = store.artifact("train", "pad-seed0", {"x": 1})
    with pytest.raises(KeyboardInterrupt), store.writing(art) as out:
        (out / "partial.bin").write_text("half")
        raise KeyboardInterrupt
    assert not art.done and not art.path.exists()
    assert not list(art.path.parent.glob(".tmp-*"))
    with store.writing(art) as out:
        (out / "ok").write_text("1")
    assert art.done


def test_labels_are_sanitised(tmp_path):
    art = ArtifactStore(tmp_path).artifact("answers", "student (untrained)/x", {})
    assert "/" not in art.path.name and " " not in art.path.name


def test_manifest_lists_every_file_and_done_checks_their_sizes(tmp_path):
    store = ArtifactStore(tmp_path)
    art = store.artifact("train", "sft-seed0", {"x": 1})
    with store.writing(art) as out:
        (out / "model.safetensors").write_bytes(b"w" * 1000)
        (out / "logs").mkdir()
        (out / "logs" / "metrics.jsonl").write_text('{"loss": 1}\n')
    files = art.manifest()["files"]
    assert sorted(files) == ["logs/metrics.jsonl", "model.safetensors"]
    assert files["model.safetensors"]["bytes"] == 1000 and len(files["model.safetensors"][CHECKSUM]) == 32
    assert art.done and art.verify() is None
    (art.path / "logs" / "metrics.jsonl").write_text("")  # truncated
    assert not art.done and "metrics.jsonl has 0 bytes" in (art.problem() or "")
    (art.path / "logs" / "metrics.jsonl").write_text('{"loss": 1}\n')
    (art.path / "model.safetensors").unlink()
    assert "model.safetensors is missing" in (art.problem() or "")


def test_flipped_bytes_pass_done_but_not_verify_and_each_file_is_hashed_once(tmp_path, monkeypatch):
    import harness.store as store_module

    store = ArtifactStore(tmp_path)
    art = store.artifact("signal", "teacher_topk", {"x": 1})
    with store.writing(art) as out:
        (out / "topk.safetensors").write_bytes(b"abcdefgh" * 100)
        (out / "values.json").write_text("{}")
    hashed: list[str] = []
    real = store_module.file_checksum
    monkeypatch.setattr(store_module, "file_checksum", lambda path, **kw: hashed.append(path.name) or real(path, **kw))
    assert art.verify(skip_suffixes=(".safetensors",)) is None and hashed == ["values.json"]
    assert art.verify() is None and art.verify() is None
    assert hashed == ["values.json", "topk.safetensors"]  # once per file per process
    other = store.artifact("signal", "teacher_topk", {"x": 2})
    with store.writing(other) as out:
        (out / "topk.safetensors").write_bytes(b"abcdefgh" * 100)
    data = bytearray((other.path / "topk.safetensors").read_bytes())
    data[400] ^= 0x01
    (other.path / "topk.safetensors").write_bytes(bytes(data))
    assert other.done  # same size: only the checksum can tell
    assert other.verify() == "topk.safetensors does not match its checksum"


def test_file_written_after_the_manifest_does_not_break_verification(tmp_path):
    store = ArtifactStore(tmp_path)
    art = store.artifact("answers", "teacher-gsm8k", {"x": 1})
    with store.writing(art) as out:
        (out / "answers.jsonl").write_text("{}\n")
    (art.path / "metadata.json").write_text('{"note": "added later"}')
    assert art.done and art.verify() is None


def test_legacy_manifests_without_a_file_list_are_used_with_one_warning(tmp_path, caplog, monkeypatch):
    import harness.store as store_module

    monkeypatch.setattr(store_module, "_LEGACY_WARNED", [])
    store = ArtifactStore(tmp_path)
    arts = [store.artifact("samples", "samples", {"x": i}) for i in range(2)]
    for art in arts:
        with store.writing(art) as out:
            (out / "samples.jsonl").write_text("{}\n")
        manifest = art.manifest()
        del manifest["files"]
        (art.path / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        assert all(art.done and art.verify() is None and art.verify() is None for art in arts)
    assert len(caplog.records) == 1 and "older pad-harness" in caplog.records[0].getMessage()


def test_truncated_artifact_is_set_aside_when_written_again(tmp_path, caplog):
    store = ArtifactStore(tmp_path)
    art = store.artifact("samples", "samples", {"x": 1})
    with store.writing(art) as out:
        (out / "samples.jsonl").write_text("0123456789\n")
    (art.path / "samples.jsonl").write_text("0123")
    assert not art.done
    with caplog.at_level(logging.WARNING), store.writing(art) as out:
        (out / "samples.jsonl").write_text("0123456789\n")
    assert art.done and (art.path / "samples.jsonl").read_text() == "0123456789\n"
    aside = list(art.path.parent.glob(f".damaged-{art.path.name}-*"))
    assert len(aside) == 1 and (aside[0] / "samples.jsonl").read_text() == "0123"
    assert "samples.jsonl has 4 bytes" in caplog.text


def test_temp_dir_of_a_live_process_is_kept_and_a_dead_ones_removed(tmp_path):
    code = ("import sys; from pathlib import Path; from harness.store import ArtifactStore\n"
            "store = ArtifactStore(Path(sys.argv[1])); art = store.artifact('samples', 'samples', {'x': 1})\n"
            "with store.writing(art) as out:\n"
            "    (out / 'samples.jsonl').write_text('theirs'); print(out, flush=True); sys.stdin.read()")
    other = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert other.stdout is not None
        theirs = Path(other.stdout.readline().strip())
        assert theirs.is_dir() and f"-p{other.pid}@" in theirs.name
        store = ArtifactStore(tmp_path)
        art = store.artifact("samples", "samples", {"x": 1})
        remote = art.path.parent / f".tmp-{art.path.name}-p{other.pid}@another.host_x-abc123"
        legacy = art.path.parent / f".tmp-{art.path.name}-k2j4h5g6"  # made by a version without owners
        remote.mkdir()
        legacy.mkdir()
        with store.writing(art) as out:
            (out / "samples.jsonl").write_text("ours")
        assert theirs.is_dir() and (theirs / "samples.jsonl").read_text() == "theirs"  # live: untouched
        assert remote.is_dir() and not legacy.exists()  # another host's owner cannot be checked: kept
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
    with store.writing(art) as out:  # a later write of the same artifact
        assert not theirs.exists()  # its owner is dead now
        (out / "samples.jsonl").write_text("ours")
    assert (art.path / "samples.jsonl").read_text() == "ours"
