"""`pad-harness ...` that SIGKILLs itself at one chosen point (the fault-injection test).

    python killed_run.py POINT pad-harness-args...

POINT (stage/label patterns as in fnmatch, e.g. `train/dpo-seed0`):
    start:<stage>/<label>    as the artifact's temp dir is made, before the stage writes anything
    commit:<stage>/<label>   after the stage wrote its files, before the manifest and the rename
    stored:<stage>/<label>   right after the rename (before e.g. the checkpoints are released)
    loss:<method>:<n>        at the n-th loss computation of that method (mid-training)
    judge:<n>                right after the n-th judge answer is committed to the judge cache
    report                   after leaderboard.json is written, before the other reports
    none                     not killed
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatch
from typing import Any


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str) -> None:
    kind, _, what = point.partition(":")
    if kind in ("start", "commit", "stored"):
        from harness.store import ArtifactStore

        real = ArtifactStore.writing

        @contextmanager
        def writing(self: Any, artifact: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            hit = fnmatch(f"{artifact.stage}/{artifact.label}", what)
            with real(self, artifact, *args, **kwargs) as out:
                if hit and kind == "start":
                    die()
                yield out
                if hit and kind == "commit":
                    die()
            if hit and kind == "stored":
                die()

        ArtifactStore.writing = writing  # type: ignore[method-assign]
    elif kind == "loss":
        from harness.registry import METHODS

        name, _, n = what.partition(":")
        cls = METHODS.get(name)
        real_loss = cls.loss
        calls = {"n": 0}

        def loss(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == int(n):
                die()
            return real_loss(self, *args, **kwargs)

        cls.loss = loss
    elif kind == "judge":
        from harness.judges.cache import CachedJudge

        real_write = CachedJudge._write
        stored = {"n": 0}

        def write(self: Any, *args: Any, **kwargs: Any) -> None:
            real_write(self, *args, **kwargs)
            stored["n"] += 1
            if stored["n"] == int(what):
                die()

        CachedJudge._write = write  # type: ignore[method-assign]
    elif kind == "report":
        import harness.report.merge as merge

        def write_csv(*args: Any, **kwargs: Any) -> Any:
            die()

        merge.write_csv = write_csv  # type: ignore[assignment]
    elif kind != "none":
        raise SystemExit(f"unknown kill point {point!r}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    install(sys.argv[1])
    from harness.cli import main

    sys.exit(main(sys.argv[2:]))
