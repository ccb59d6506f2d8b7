"""The trainset stage: the SAME prompts for every method, those every method's data filter keeps (reading
the samples and the signals the filters need), or one error naming what left none."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config import Experiment
from harness.methods.base import Method
from harness.stages import data as data_stages
from harness.stages.base import Stage
from harness.stages.signals_stage import SignalStage, load_signals
from harness.store import canonical_json

if TYPE_CHECKING:
    from harness.stages.context import RunContext


class TrainsetStage(Stage):
    """The SAME prompts for every method: those every method's data filter keeps."""

    kind = "trainset"

    def __init__(self, ctx: RunContext, samples: data_stages.SamplesStage, signals: dict[str, SignalStage]) -> None:
        super().__init__(ctx, "trainset")
        self.samples = samples
        # A source keyed by prompt id (the teacher's own samples) is not aligned with the samples: filters
        # never read it.
        self.signals = {name: stage for name, stage in signals.items() if stage.source.reads_samples}

    def inputs(self) -> dict[str, Any]:
        filters = sorted((f for m in self.ctx.methods.values() if (f := m.filter_identity()) is not None),
                         key=canonical_json)
        return {"samples": self.samples.artifact.key, "filters": filters,
                "signals": {name: stage.artifact.key for name, stage in self.signals.items()}}

    def run(self, out: Path) -> dict[str, Any]:
        groups = data_stages.groups_from(self.samples.read(), load_signals(self.signals, self.signals))
        keeps = data_stages.filter_keeps(self.ctx.methods, groups)
        kept = data_stages.build_trainset(keeps, groups)
        data_stages.write_trainset(out, kept, dropped=len(groups) - len(kept))
        if not kept:
            from harness.errors import HarnessError

            raise HarnessError(empty_trainset_reason(self.ctx.exp, self.ctx.methods, len(groups), keeps))
        return {"prompts": len(kept), "dropped_by_filters": len(groups) - len(kept), "sampled_prompts": len(groups),
                "kept_by_filter": {row: len(keep) for row, keep in keeps.items()}}

    def prompt_ids(self) -> set[str]:
        return set(data_stages.read_trainset_ids(self.artifact.path))


def empty_trainset_reason(exp: Experiment, methods: dict[str, Method], sampled: int,
                          keeps: dict[str, set[str]]) -> str:
    """Why no prompt is left to train on, naming the setting or the methods' filters responsible."""
    sampling = exp.sampling
    if not sampled:
        finished = " finished" if sampling.drop_unfinished else ""
        return (f"sampling kept no prompt: each of the {exp.prompts.count} prompts had fewer than sampling.n "
                f"({sampling.n}) distinct{finished} responses among its {sampling.candidates} candidates; raise "
                f"sampling.temperature ({sampling.temperature:g}) or sampling.candidates"
                + (", or set sampling.drop_unfinished: false" if sampling.drop_unfinished else ""))
    kept = "; ".join(f"{row}'s filter kept {len(keep)}" for row, keep in keeps.items())
    switches = ", ".join(f"{row}'s {name}" for row in keeps
                         for name in (methods[row].filter_params or ("params",)))
    return (f"no training prompt is kept by every method's data filter ({sampled} sampled; {kept}); use more "
            f"prompts (prompts.count) or turn off a filter ({switches})")
