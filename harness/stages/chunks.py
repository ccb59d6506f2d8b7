"""Per-prompt stages split across the processes of a launch, in chunks that survive interruption.

A stage whose output is a list over prompts (samples, a signal source's values) computes it in chunks of
`data_parallel.chunk` items: chunk j on process j mod N (a deterministic split), each written to its own
directory under the artifact's work dir (on the run dir: every process sees it) and renamed into place
when complete. The main process waits for every chunk and merges them, in order, into the artifact. A
single process computes the very same chunks, so the artifact's bytes do not depend on how many
processes made it, and a process restarted after being killed computes only the chunks it has not
finished. The merge keeps the stage's own file layout; manifests are merged by `merge_manifests`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.processes import ProcessInfo
from harness.runtime_facts import distinct, runtime_facts
from harness.store import Artifact, ArtifactStore, write_json_atomic

PART_MANIFEST = ".chunk.json"  # hidden: a stage's own files never collide with it


class Chunks:
    def __init__(self, store: ArtifactStore, artifact: Artifact, n_items: int, chunk: int,
                 processes: ProcessInfo) -> None:
        self.artifact = artifact
        self.root = store.work_dir(artifact) / "chunks"
        self.n_items, self.chunk, self.processes = n_items, chunk, processes
        self.count = max(1, -(-n_items // chunk))  # an empty stage is one empty chunk

    def items(self, j: int) -> slice:
        return slice(j * self.chunk, min((j + 1) * self.chunk, self.n_items))

    def path(self, j: int) -> Path:
        return self.root / f"{j:06d}"

    def done(self, j: int) -> bool:
        return (self.path(j) / PART_MANIFEST).is_file()

    def compute_mine(self, compute: Callable[[slice, Path], dict[str, Any] | None]) -> int:
        """Compute this process's chunks not yet done (`compute(items, dir)` writes into `dir` and returns
        the chunk's manifest); return how many were computed."""
        computed = 0
        rank, world = self.processes.rank, self.processes.world_size
        for j in range(rank, self.count, world):
            if self.artifact.done:
                break  # merged meanwhile (a process arriving late after a restart): nothing left to do
            if self.done(j):
                continue
            scratch = self.root / f".{j:06d}.partial-{rank}"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            manifest = compute(self.items(j), scratch) or {}
            write_json_atomic(scratch / PART_MANIFEST, {"manifest": manifest, "computed_by": rank,
                                                        "runtime": runtime_facts()})
            shutil.rmtree(self.path(j), ignore_errors=True)
            scratch.rename(self.path(j))  # complete or absent: never half a chunk
            computed += 1
        return computed

    def wait_all(self, poll_s: float = 0.5) -> list[Path]:
        """Every chunk's directory, in order, once all are done (other processes compute theirs)."""
        while not all(self.done(j) for j in range(self.count)):
            time.sleep(poll_s)
        return [self.path(j) for j in range(self.count)]

    def _parts(self) -> list[dict[str, Any]]:
        return [json.loads((self.path(j) / PART_MANIFEST).read_text()) for j in range(self.count)]

    def merged_manifest(self) -> dict[str, Any]:
        """The chunks' manifests merged (`merge_manifests`), and which process computed how many chunks."""
        parts = self._parts()
        by_process: dict[str, int] = {}
        for part in parts:
            by_process[str(part["computed_by"])] = by_process.get(str(part["computed_by"]), 0) + 1
        runtime = distinct(p["runtime"] for p in parts if "runtime" in p)  # each chunk's process's facts
        return {**merge_manifests([p["manifest"] for p in parts]), **({"runtime": runtime} if runtime else {}),
                "chunks": {"count": self.count, "size": self.chunk, "computed_by_process": by_process}}

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        if not any(self.root.parent.iterdir()):
            self.root.parent.rmdir()  # the stage's work dir held nothing else


def merge_manifests(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts add up, model sizes (`*_params`) and everything else are the same in every part."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key not in merged:
                merged[key] = value
            elif isinstance(value, dict) and isinstance(merged[key], dict):
                merged[key] = merge_manifests([merged[key], value])
            elif isinstance(value, list) and isinstance(merged[key], list):
                merged[key] = merged[key] + value  # e.g. the ids of dropped prompts
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and not key.endswith("_params"):
                merged[key] = merged[key] + value
    return merged
