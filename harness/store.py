"""The artifact store: every stage output lives in a directory keyed by a hash of exactly its inputs.

    run_dir/artifacts/<stage>/<label>-<key>/      finished artifact (with manifest.json)
    run_dir/artifacts/<stage>/.tmp-<label>-<key>-*/  being written; renamed into place when complete

A finished artifact is never rewritten, so a rerun skips it; an interrupted stage leaves only a temp
directory, which the next run discards (or, for training, resumes from its checkpoints, which live in
`run_dir/work/`). The key covers the stage's code version, so a change in how a stage computes
invalidates exactly that stage and what depends on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON-serialisable for hashing: {type(obj).__name__}")


def hash_inputs(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()[:16]


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=_json_default)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


@dataclass(frozen=True)
class Artifact:
    stage: str
    label: str
    key: str
    path: Path
    inputs: dict[str, Any]

    @property
    def done(self) -> bool:
        return (self.path / "manifest.json").is_file()

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / "manifest.json").read_text())

    def file(self, name: str) -> Path:
        return self.path / name


class ArtifactStore:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / "artifacts"

    def artifact(self, stage: str, label: str, inputs: dict[str, Any]) -> Artifact:
        key = hash_inputs({"stage": stage, **inputs})
        safe_label = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:80]
        return Artifact(stage, label, key, self.root / stage / f"{safe_label}-{key}", inputs)

    def work_dir(self, artifact: Artifact) -> Path:
        """Scratch space that survives interruption (training checkpoints, partial caches)."""
        path = self.run_dir / "work" / artifact.stage / artifact.path.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextmanager
    def writing(self, artifact: Artifact, extra_manifest: dict[str, Any] | None = None) -> Iterator[Path]:
        """Yield a temp directory; on success write manifest.json and rename it into place atomically."""
        artifact.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in artifact.path.parent.glob(f".tmp-{artifact.path.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted run
        tmp = Path(tempfile.mkdtemp(dir=artifact.path.parent, prefix=f".tmp-{artifact.path.name}-"))
        started = time.time()
        manifest: dict[str, Any] = dict(extra_manifest or {})
        try:
            yield tmp
            existing = tmp / "manifest.json"
            if existing.is_file():  # the stage wrote its own (accounting etc.); merge ours in
                manifest = {**manifest, **json.loads(existing.read_text())}
            manifest.update(
                stage=artifact.stage,
                label=artifact.label,
                key=artifact.key,
                inputs=artifact.inputs,
                wall_time_s=manifest.get("wall_time_s", round(time.time() - started, 3)),
                finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
            write_json_atomic(tmp / "manifest.json", manifest)
            if artifact.path.exists():  # finished concurrently: keep the first, drop ours
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, artifact.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
