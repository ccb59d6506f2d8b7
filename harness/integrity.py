"""Damaged artifacts are never used: what a step reads is verified (checksums) just before the step runs.

A step reads the artifacts whose keys appear in its own inputs (keys chain through upstream keys, see
harness.pipeline), and through them their own inputs: a direct input is verified in full, an indirect one
without its `.safetensors` files (weights and top-k tensors, which only a direct consumer reads). Before the
reports are written, every artifact is verified the same way without its `.safetensors` files. Each file is
hashed at most once per process (harness.store).

A damaged artifact (a file changed, truncated or missing) is moved aside to
`artifacts/<stage>/.damaged-<name>-<time>` and rebuilt by re-running its step, then the run goes on. In a
multi-process launch the workers cannot follow a step that the main process goes back to, so there the run
stops with one message naming the artifact and how to rebuild it (delete it and rerun).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.store import CHECKSUM, ArtifactStore

if TYPE_CHECKING:
    from harness.stages.base import Stage as Step

log = logging.getLogger(__name__)

TENSOR_FILES: tuple[str, ...] = (".safetensors",)


def keys_in(obj: Any) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from keys_in(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from keys_in(value)


def require_intact(artifact: Any, skip: tuple[str, ...] = ()) -> None:
    """Raise, naming the artifact and what to do, if it is damaged (a process that cannot rebuild it)."""
    problem = artifact.verify(skip)
    if problem is not None:
        raise HarnessError(f"artifact {artifact.path} is damaged ({problem}); delete that directory and rerun "
                           f"to rebuild it")


class PlanRunner:
    """Runs the not-done steps of a plan in order, verifying each step's inputs first (main process)."""

    def __init__(self, steps: list[Step], store: ArtifactStore, *, rebuild: bool) -> None:
        self.steps = steps
        self.store = store
        self.rebuild = rebuild
        index = {step.artifact.key: i for i, step in enumerate(steps)}
        self.direct = [sorted({index[k] for k in keys_in(step.artifact.inputs) if k in index} - {i})
                       for i, step in enumerate(steps)]
        self.set_aside: dict[str, Path] = {}  # artifact key -> where its damaged copy went

    def inputs_of(self, i: int) -> list[tuple[int, tuple[str, ...]]]:
        """(step index, file suffixes not checked) of everything step i reads, in plan order."""
        direct = set(self.direct[i])
        seen: set[int] = set()
        todo = list(direct)
        while todo:
            j = todo.pop()
            if j not in seen:
                seen.add(j)
                todo.extend(self.direct[j])
        return [(j, () if j in direct else TENSOR_FILES) for j in sorted(seen)]

    def first_damaged(self, candidates: list[tuple[int, tuple[str, ...]]]) -> int | None:
        """Index of the first candidate that is unfinished or damaged (a damaged one is moved aside)."""
        for j, skip in candidates:
            art = self.steps[j].artifact
            if not art.path.exists():
                return j  # gone meanwhile (deleted by hand): build it again before its consumer
            problem = art.verify(skip)
            if problem is None:
                continue
            if not self.rebuild:
                raise HarnessError(f"artifact {art.path} is damaged ({problem}); delete that directory and rerun "
                                   f"to rebuild it")
            self.set_aside[art.key] = self.store.set_aside(art, problem)
            return j
        return None

    def run(self, run_step: Callable[[Step], None]) -> None:
        report_inputs = [(j, TENSOR_FILES) for j in range(len(self.steps))]
        i = 0
        while True:
            while i < len(self.steps):
                step = self.steps[i]
                if step.done:
                    i += 1
                    continue
                back = self.first_damaged(self.inputs_of(i))
                if back is not None:
                    i = back
                    continue
                run_step(step)
                self._compare_rebuilt(step)
                i += 1
            back = self.first_damaged(report_inputs)
            if back is None:
                return
            i = back

    def _compare_rebuilt(self, step: Step) -> None:
        aside = self.set_aside.pop(step.artifact.key, None)
        if aside is None:
            return
        try:
            before = json.loads((aside / "manifest.json").read_text()).get("files") or {}
        except (OSError, ValueError, AttributeError):
            return
        after = step.artifact.manifest().get("files") or {}
        changed = sorted(rel for rel, entry in after.items()
                         if isinstance(before.get(rel), dict) and before[rel].get(CHECKSUM) != entry.get(CHECKSUM))
        if changed:
            log.warning("rebuilt %s differs from its damaged copy's manifest in %s: its stage is not "
                        "bit-reproducible here; artifacts made earlier from that copy are kept",
                        step.artifact.path, ", ".join(changed[:3]))
