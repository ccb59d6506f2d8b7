"""What keeps a launch of several processes (and a third-party plugin) from silently going wrong: every
process plans the main process's steps, a trained row never answers with the base weights, chunks that the
default merge cannot join are refused, and a signal plugin's class is part of its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from helpers.experiments import small_experiment

from harness.config import parse_experiment
from harness.errors import ConfigError, HarnessError
from harness.pipeline import Pipeline, same_plan_everywhere
from harness.processes import ProcessInfo


def experiment(name: str, **changes: Any) -> Any:
    return parse_experiment(small_experiment(name, budget={"micro_batch": 1}, **changes), "t")


def test_a_process_planning_other_steps_than_the_main_process_stops_with_the_first_difference(
        tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("MASTER_PORT", "29999")
    main = Pipeline(experiment("a"), tmp_path, progress=False).build_plan()
    same_plan_everywhere(main, tmp_path, ProcessInfo(rank=0, world_size=2))
    same_plan_everywhere(main, tmp_path, ProcessInfo(rank=1, world_size=2))  # the same plan: no error
    other = Pipeline(experiment("a", prompts=5), tmp_path, progress=False).build_plan()
    with pytest.raises(HarnessError, match=r"process 1 plans other steps .*first difference at step 0: main prompts"):
        same_plan_everywhere(other, tmp_path, ProcessInfo(rank=1, world_size=2))


def test_a_trained_row_without_its_weights_cannot_be_used_as_the_base_student(tmp_path: Path) -> None:
    pipe = Pipeline(experiment("w"), tmp_path, progress=False)
    trained = next(row for row in pipe.build_plan().rows if row.train is not None)
    loaded = pipe.models.loaded(trained.handle, weights=False)  # what a weights-loading backend gets
    assert loaded.identity["trained"] == trained.train.key and loaded.formatter is not None
    with pytest.raises(HarnessError, match="needs_weights"):
        loaded.model.parameters()


def test_the_student_cannot_be_offloaded() -> None:
    with pytest.raises(ConfigError, match="student.offload"):
        experiment("o", student={"model": "tiny:llama", "offload": True})


def test_the_default_merge_refuses_what_it_cannot_join(tmp_path: Path) -> None:
    from harness.signals.builtin import TeacherLogProbs

    parts = [tmp_path / "0", tmp_path / "1"]
    for i, part in enumerate(parts):
        part.mkdir()
        (part / "values.json").write_text(f'{{"mean": [[{i}]]}}')
        (part / ".chunk.json").write_text("{}")  # the chunk's bookkeeping is not the source's
    out = tmp_path / "out"
    out.mkdir()
    TeacherLogProbs().merge(parts, out)
    assert (out / "values.json").read_text().replace(" ", "").replace("\n", "") == '{"mean":[[0],[1]]}'
    (parts[0] / "extra.jsonl").write_text("{}\n")
    with pytest.raises(HarnessError, match="extra.jsonl.*override"):
        TeacherLogProbs().merge(parts, tmp_path / "out")
    (parts[0] / "extra.jsonl").unlink()
    (parts[1] / "values.json").write_text('{"mean": 3}')
    with pytest.raises(HarnessError, match="not a JSON object of lists"):
        TeacherLogProbs().merge(parts, tmp_path / "out")


def test_a_plugin_source_is_keyed_by_its_class_and_named_as_registered(tmp_path: Path) -> None:
    from harness.registry import SIGNALS
    from harness.signals.builtin import TeacherLogProbs
    from harness.stages.signals_stage import signal_sources

    class Copycat(TeacherLogProbs):  # the built-in's inputs, another computation
        name: ClassVar[str] = "copycat"
        provides: ClassVar[tuple[str, ...]] = ("copycat_logprob",)

    class Misnamed(Copycat):
        provides: ClassVar[tuple[str, ...]] = ("misnamed_logprob",)

    SIGNALS.register("copycat", Copycat)
    try:
        assert type(signal_sources({"copycat_logprob": ["m"]})["copycat_logprob"]) is Copycat
        ctx = Pipeline(experiment("k", methods=[{"name": "pad"}]), tmp_path,
                       progress=False).ctx
        from harness.stages.data import PromptsStage, SamplesStage
        from harness.stages.signals_stage import SignalStage

        samples = SamplesStage(ctx, PromptsStage(ctx))
        builtin, copy = SignalStage(ctx, TeacherLogProbs(), samples), SignalStage(ctx, Copycat(), samples)
        assert "source" not in builtin.artifact.inputs  # the built-ins' keys are those recorded before
        assert copy.artifact.inputs["source"].endswith("Copycat") and copy.artifact.key != builtin.artifact.key
        with pytest.raises(ConfigError, match="no installed signal source provides 'nothing', which m reads"):
            signal_sources({"nothing": ["m"]})
        SIGNALS.register("misnamed", Misnamed)
        with pytest.raises(ConfigError, match="registered as 'misnamed'.*set `name = 'misnamed'`"):
            signal_sources({"copycat_logprob": ["m"]})
    finally:
        SIGNALS.unregister("copycat")
        SIGNALS.unregister("misnamed")
