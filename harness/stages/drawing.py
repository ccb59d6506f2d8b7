"""`prompts.count_after_filters`: draw prompts until `count` of them survive the sampling filter.

The prompts artifact then holds the whole usable source in its seeded order (the pool). The samples stage
samples it from the front in whole chunks (harness.stages.chunks: chunk j on process j mod N): first enough
chunks for `count` prompts, then, while fewer than `count` survived, as many more chunks as the survival so
far says are missing. Which chunks are sampled depends only on the chunks' results, and every process reads
them all before deciding, so a launch of any size samples the same chunks as one process. The samples kept
are the first `count` survivors in the seeded order; `drawn_prompts` (the manifest) is how far the drawing
went: survivors past the first `count` were sampled (and paid for) but are not trained on. Held-out prompts
come from the other end of the seeded order (harness.prompts.load_held_out), checked against `drawn`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import DataSourceError
from harness.stages.chunks import PART_MANIFEST, Chunks

if TYPE_CHECKING:
    from harness.stages.base import Stage
    from harness.stages.context import RunContext


def next_draw(drawn: int, kept: int, want: int, pool: int, chunk: int) -> int:
    """How many pool prompts to have drawn next: enough whole chunks for the missing `want - kept` survivors
    at the survival rate seen so far (at least one more chunk; the whole pool at most)."""
    missing = want - kept
    needed = missing if kept == 0 else math.ceil(missing * drawn / kept)
    return min(pool, max(drawn + chunk, math.ceil((drawn + needed) / chunk) * chunk))


def _kept(work: Chunks) -> int:
    return sum(int(json.loads((part / PART_MANIFEST).read_text())["manifest"].get("kept_prompts", 0))
               for part in work.wait_all())


def _first_lines(parts: list[Path], name: str, limit: int) -> Iterator[bytes]:
    left = limit
    for part in parts:
        with (part / name).open("rb") as src:
            for line in src:
                if left == 0:
                    return
                left -= 1
                yield line


def draw_until_kept(ctx: RunContext, stage: Stage, pool: int, compute: Callable[[slice, Path], dict[str, Any]],
                    out: Path) -> dict[str, Any] | None:
    """Sample the pool's chunks until `prompts.count` prompts survive; the main process writes the first
    `count` survivors and returns the manifest (None on the other processes)."""
    want, chunk = ctx.exp.prompts.count, ctx.exp.data_parallel.chunk
    drawn = min(pool, math.ceil(want / chunk) * chunk)
    while True:
        work = Chunks(ctx.store, stage.artifact, drawn, chunk, ctx.processes)
        work.compute_mine(compute)
        kept = _kept(work)  # every process waits for every chunk: all decide the same next draw
        if kept >= want or drawn == pool:
            break
        drawn = next_draw(drawn, kept, want, pool, chunk)
    if kept < want:
        sampling = ctx.exp.sampling
        raise DataSourceError(
            f"prompts.count is {want} prompts after the sampling filter (prompts.count_after_filters), but all "
            f"{pool} usable prompts of {ctx.exp.prompts.source!r} leave only {kept} with sampling.n "
            f"({sampling.n}) distinct responses; lower prompts.count to at most {kept}, use a larger source, or "
            f"raise sampling.candidates/temperature")
    if not ctx.processes.is_main:
        return None
    parts = work.wait_all()
    flags: list[bool] = []
    with (out / "samples.jsonl").open("wb") as dst:
        for line in _first_lines(parts, "samples.jsonl", want):
            dst.write(line)
            flags += json.loads(line).get("finished") or []
    manifest = work.merged_manifest()
    if "unfinished" in manifest and flags:  # the kept responses' count, not every drawn prompt's
        manifest["unfinished"] = {**manifest["unfinished"], "kept": flags.count(False), "of": len(flags)}
    return {**manifest, "kept_prompts": want, "drawn_prompts": drawn, "surplus_prompts": kept - want,
            "count_after_filters": True}
