"""The artifact store: keys depend on exactly the inputs; writes are atomic; interrupted writes vanish."""

from __future__ import annotations

import pytest

from harness.store import ArtifactStore, hash_inputs


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
