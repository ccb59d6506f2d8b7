"""Several processes on one run (`torchrun`, `accelerate launch`): who does which stage.

Training is collective: every process takes part (data parallel) and the main process stores the trained
model. Samples and signals are split in chunks of prompts over every process, merged by the main process
(harness.stages.chunks); a row's answers and judgements are computed by one process (row i on process
i mod N), so each artifact is made once and judge calls are not paid twice; prompts, the trainset and the
reports are the main process's. Every process waits for the artifacts its next step reads to appear in the
run directory, which must therefore be on a file system they all see. They wait by polling, not at a
collective barrier: a long evaluation would outlast a process group's timeout. If a process fails, the
launcher stops the others.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from harness.store import Artifact


@dataclass(frozen=True)
class ProcessInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> ProcessInfo:
        """What every launcher (torchrun, accelerate, deepspeed) sets for its worker processes."""
        return cls(rank=int(os.environ.get("RANK", "0")), world_size=int(os.environ.get("WORLD_SIZE", "1")))


def wait_for(artifact: Artifact, poll_s: float = 0.5) -> None:
    while not artifact.done:
        time.sleep(poll_s)
