"""The `Stage`: one artifact of the plan, owning its inputs and its computation.

A stage names everything its output depends on (`inputs`: settings, model identities and the keys of the
upstream stages it reads), so its artifact key (harness.store) chains through every upstream key and the
plan is computed from the experiment alone (`--dry-run` loads no model). `run(out)` computes the output
into `out` (stored atomically by the executor, harness.pipeline) reading its upstream stages' artifacts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.stages import STAGE_VERSIONS
from harness.store import Artifact

if TYPE_CHECKING:
    from harness.stages.context import RunContext


class Stage(ABC):
    kind: ClassVar[str]  # "prompts", "samples", ... (a STAGE_VERSIONS entry; the store's folder)
    # Every process of a launch takes part (training, the chunks of a per-prompt stage); else the process
    # `owner` names.
    collective: ClassVar[bool] = False
    engine_key: str | None = None  # consecutive steps with the same key share one generation engine
    # Which process of a launch computes a non-collective stage: rank `owner mod N` (a row's answers and
    # judgements: the row's position, so rows are evaluated in parallel). None: the main process.
    owner: int | None = None
    detail: str = ""  # shown by --dry-run (e.g. which judge grades these answers)

    def __init__(self, ctx: RunContext, label: str) -> None:
        self.ctx = ctx
        self.label = label

    @abstractmethod
    def inputs(self) -> dict[str, Any]:
        """Everything the output depends on (upstream keys included); never loads a model."""

    @abstractmethod
    def run(self, out: Path) -> dict[str, Any] | None:
        """Compute the output into `out`; return what the manifest records (accounting, sources, ...)."""

    def after_commit(self) -> None:  # noqa: B027 - optional hook
        """Once the artifact is stored (e.g. drop scratch files)."""

    def leftovers(self) -> list[Path]:
        """Scratch files of a stored artifact that an interruption right after storing it left behind."""
        return []

    @cached_property
    def artifact(self) -> Artifact:
        return self.ctx.store.artifact(self.kind, self.label, {"version": STAGE_VERSIONS[self.kind], **self.inputs()})

    @property
    def stage(self) -> str:
        return self.kind

    @property
    def done(self) -> bool:
        return self.artifact.done

    def runs_on(self, rank: int, world_size: int) -> bool:
        """Whether process `rank` computes (or, collective, takes part in) this stage."""
        return self.collective or (self.owner or 0) % world_size == rank
