"""Signal stages: each signal source (harness.signals.base) computed ONCE per (model, samples), cached,
shared by every method that reads one of the signals it provides (the training set they feed:
harness.stages.trainset).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError
from harness.methods.base import PromptGroup
from harness.models.base import Generator, LoadedModel
from harness.registry import SIGNALS
from harness.signals.base import SignalSource, Who
from harness.stages import data as data_stages
from harness.stages.base import Stage

if TYPE_CHECKING:
    from harness.stages.context import RunContext


def signal_sources(needed: dict[str, list[str]]) -> dict[str, SignalSource]:
    """signal name -> the registered source providing it, for every signal in `needed` (signal -> the rows
    of the methods asking for it). Only the needed signals must have exactly one provider: an installed
    source nobody asks for is never loaded twice over."""
    providers: dict[str, list[str]] = {}
    for name in SIGNALS.names():
        cls = SIGNALS.get(name)
        if cls.name != name:
            raise ConfigError(f"the signal source registered as {name!r} ({cls.__module__}.{cls.__qualname__}) "
                              f"names its artifact {cls.name!r}: they must be the same (set `name = {name!r}`)")
        for signal in cls.provides:
            providers.setdefault(signal, []).append(name)
    out: dict[str, SignalSource] = {}
    sources: dict[str, SignalSource] = {}
    for signal, rows in sorted(needed.items()):
        found = providers.get(signal, [])
        if len(found) != 1:
            asking = ", ".join(sorted(rows))
            if found:
                raise ConfigError(f"signal {signal!r} (read by {asking}) is provided by {len(found)} installed "
                                  f"sources ({', '.join(found)}); uninstall one of the packages registering them")
            known = ", ".join(sorted(providers)) or "none"
            raise ConfigError(f"no installed signal source provides {signal!r}, which {asking} reads; install the "
                              f"package that ships it (entry-point group harness.signals); known: {known}")
        out[signal] = sources.setdefault(found[0], SIGNALS.get(found[0])())
    return out


class _StageSignalContext:
    """`SignalContext` for one signal stage (what a source may use of the run); `chunk` narrows it to the
    groups (or prompts) of one chunk, sharing the stage's generators."""

    def __init__(self, ctx: RunContext, samples: data_stages.SamplesStage) -> None:
        self.ctx, self.samples = ctx, samples
        self.exp = ctx.exp
        self._groups: list[PromptGroup] | None = None
        self._prompts: list[dict[str, Any]] | None = None
        self._generators: dict[str, Generator] = {}

    def chunk(self, groups: list[PromptGroup] | None, prompts: list[dict[str, Any]] | None) -> _StageSignalContext:
        narrowed = _StageSignalContext(self.ctx, self.samples)
        narrowed._groups, narrowed._prompts, narrowed._generators = groups, prompts, self._generators
        return narrowed

    @property
    def prompts_key(self) -> str:
        return self.samples.prompts.artifact.key

    def groups(self) -> list[PromptGroup]:
        return self._groups if self._groups is not None else self.samples.groups()

    def prompts(self) -> list[dict[str, Any]]:
        return self._prompts if self._prompts is not None else self.samples.answered_prompts()

    def model(self, who: Who) -> LoadedModel:
        return self.ctx.models.loaded(self.ctx.handle(who))

    def model_key(self, who: Who) -> dict[str, Any]:
        return self.ctx.teacher_key if who == "teacher" else self.ctx.student_key

    def generator(self, who: Who) -> Generator:
        if who not in self._generators:
            self._generators[who] = self.ctx.models.generator(self.ctx.handle(who), self.exp.sampling.backend)
        return self._generators[who]

    def close(self) -> None:
        while self._generators:
            self._generators.popitem()[1].close()  # an engine (vLLM) is not kept beside what follows


class SignalStage(Stage):
    """One signal source's values, split in chunks of groups (or prompts) across the processes of a launch
    (harness.stages.chunks) and merged by the source."""

    kind = "signal"
    collective = True  # every process computes its chunks; the main process merges them

    def __init__(self, ctx: RunContext, source: SignalSource, samples: data_stages.SamplesStage) -> None:
        super().__init__(ctx, source.name)
        self.source = source
        self.samples = samples
        self.signal_ctx = _StageSignalContext(ctx, samples)

    def inputs(self) -> dict[str, Any]:
        # What it reads upstream, whatever the source declares: the samples, or the prompts themselves.
        upstream = ({"samples": self.samples.artifact.key} if self.source.reads_samples
                    else {"prompts": self.samples.prompts.artifact.key})
        if self.ctx.exp.prompts.count_after_filters:  # the prompts it answers are those the sampling kept
            upstream["samples"] = self.samples.artifact.key
        # A plugin's class is part of its key (two sources with equal inputs are different computations);
        # the built-ins' keys predate this and stay as they were.
        cls = type(self.source)
        origin = {} if cls.__module__ == "harness.signals.builtin" else {"source": f"{cls.__module__}.{cls.__qualname__}"}
        return {**upstream, **self.source.inputs(self.signal_ctx), **origin, **data_stages.chunk_inputs(self.ctx.exp)}

    def run(self, out: Path) -> dict[str, Any] | None:
        """Its manifest's `accounting` is what the precompute cost every method that reads it (the model
        size rides along so FLOPs can be estimated)."""
        source, whole = self.source, self.signal_ctx
        # What the source reads, split by position: the sampled groups, or the run's prompts.
        items: list[Any] = whole.groups() if source.reads_samples else whole.prompts()
        work = data_stages.chunks_of(self.ctx, self, len(items))

        def compute(part: slice, part_dir: Path) -> dict[str, Any]:
            chunk = items[part]
            narrowed = whole.chunk(chunk, None) if source.reads_samples else whole.chunk(None, chunk)
            return source.compute(narrowed, part_dir)

        try:
            work.compute_mine(compute)
        finally:
            whole.close()
        if not self.ctx.processes.is_main:
            return None
        source.merge(work.wait_all(), out)
        manifest = work.merged_manifest()
        model = self.signal_ctx.model(self.source.model)
        manifest.setdefault("accounting", {})[f"{self.source.model}_params"] = int(
            sum(p.numel() for p in model.model.parameters()))
        return manifest

    def after_commit(self) -> None:
        data_stages.chunks_of(self.ctx, self, 0).remove()

    def leftovers(self) -> list[Path]:
        return data_stages.chunk_leftovers(self.ctx, self)

    def load(self, signal: str) -> list[Any] | dict[str, Any]:
        return self.source.load(signal, self.artifact.path)


def signal_stages(ctx: RunContext, samples: data_stages.SamplesStage) -> dict[str, SignalStage]:
    """signal name -> its stage, for every signal a method of the run reads (a source's stage shared by
    the signals it provides). Students first (the sampler is usually the student), then by name."""
    needed: dict[str, list[str]] = {}
    for row, method in ctx.methods.items():
        for signal in method.signals_needed():
            needed.setdefault(signal, []).append(row)
    sources = signal_sources(needed)
    stages: dict[str, SignalStage] = {}
    ordered = sorted(set(sources.values()), key=lambda src: (src.model != "student", src.name))
    for source in ordered:
        stage = SignalStage(ctx, source, samples)
        for signal, provider in sources.items():
            if provider is source:
                stages[signal] = stage
    return stages


def load_signals(stages: dict[str, SignalStage], names: Iterable[str]) -> dict[str, Any]:
    return {name: stages[name].load(name) for name in sorted(names)}
