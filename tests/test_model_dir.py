"""A trained student's directory is a complete Hugging Face model (harness.interop.model_dir).

A tiny student trained through the real pipeline (prompts -> samples -> signals -> trainset -> train): its
train artifact alone loads with `AutoTokenizer` / `AutoModelForCausalLM`, carries the chat template it trained
under and a generation config that stops where the harness stops, and answers greedily under plain
`model.generate` exactly as the harness's `hf` backend answers for that row. A random tiny model's greedy
answers repeat one token and never end their turn, so a second student is taught short answers (each ending
its turn) with the trainer: its answers differ per prompt and stop, in both.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import make_tiny
from helpers.experiments import small_experiment
from helpers.training import NLLMethod, budget

from harness.config import parse_experiment
from harness.interop.model_dir import CONTEXT_FILE, complete_model_dir
from harness.methods.base import PromptGroup
from harness.models.base import GenerationRequest, LoadedModel, SamplingParams
from harness.models.chat import CHAT_FORMAT_VERSION
from harness.models.hf_generator import HFGenerator
from harness.pipeline import Pipeline
from harness.stages.training import TrainStage
from harness.training.checkpoint import load_trained_weights
from harness.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

QUESTIONS = ["Name three primary colours.", "What is the capital of France?", "Write a haiku about rain.",
             "Suggest a name for a cat.", "Explain what a prime number is.", "Give one tip for better sleep."]
TAUGHT = {"Name a primary colour.": "red", "What is the capital of France?": "Paris", "Is ice cold?": "yes",
          "Suggest a name for a cat.": "Tom", "How many legs has a spider?": "eight", "Say hi.": "hi there"}
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def pipeline_row(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LoadedModel]:
    """(the train artifact's directory, the row's model as the harness loads it for evaluation)."""
    data = small_experiment("model-dir", budget={"epochs": 2, "micro_batch": 2, "learning_rate": 3e-2,
                                                 "warmup_ratio": 0.0})
    pipe = Pipeline(parse_experiment(data, "test"), tmp_path_factory.mktemp("model-dir-run"), progress=False)
    plan = pipe.build_plan()
    for step in plan.steps:
        if step.stage in ("prompts", "samples", "signal", "trainset", "train"):
            pipe._run_step(step)
    train_stage = next(step for step in plan.steps if isinstance(step, TrainStage))
    return train_stage.artifact.path, pipe.ctx.models.loaded(train_stage.handle())


def conversation(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def harness_answers(loaded: LoadedModel, questions: list[str]) -> list[tuple[list[int], bool]]:
    """The hf backend's greedy answers, one left-padded batch: (token ids without the stop id, ended its turn)."""
    requests = [GenerationRequest(loaded.formatter.prompt_ids(conversation(q)), seed=0) for q in questions]
    return [(out.token_ids[0], out.finished[0]) for out in HFGenerator(loaded).generate(requests, GREEDY)]


def plain_transformers_answers(directory: Path, questions: list[str]) -> list[tuple[list[int], bool]]:
    """Greedy answers from the directory alone, one prompt at a time: its tokenizer's chat template, its
    generation config (whose eos ids stop `generate`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    eos = model.generation_config.eos_token_id
    stops = {eos} if isinstance(eos, int) else set(eos)
    answers = []
    for question in questions:
        inputs = tokenizer.apply_chat_template(conversation(question), add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
        out = model.generate(**inputs, do_sample=False, max_new_tokens=GREEDY.max_new_tokens)
        ids = out[0, inputs["input_ids"].shape[1]:].tolist()
        stopped = bool(ids) and ids[-1] in stops
        answers.append((ids[:-1] if stopped else ids, stopped))
    return answers


def test_the_train_artifact_loads_alone_with_its_template_and_stop_ids(pipeline_row: tuple[Path, LoadedModel]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, loaded = pipeline_row
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            CONTEXT_FILE} <= {p.name for p in directory.iterdir()}
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert tokenizer.chat_template == loaded.formatter.tokenizer.chat_template
    model = AutoModelForCausalLM.from_pretrained(directory)
    assert model.generation_config.eos_token_id == list(loaded.formatter.stop_ids)
    # Stored with the artifact (listed in its manifest), so integrity checks cover them.
    manifest = json.loads((directory / "manifest.json").read_text())
    assert {"tokenizer.json", "generation_config.json", CONTEXT_FILE} <= set(manifest["files"])


def test_plain_transformers_answers_like_the_harness_for_a_pipeline_row(
        pipeline_row: tuple[Path, LoadedModel]) -> None:
    directory, loaded = pipeline_row
    ours = harness_answers(loaded, QUESTIONS)
    assert plain_transformers_answers(directory, QUESTIONS) == ours
    assert ours != harness_answers(make_tiny("llama", seed=0), QUESTIONS)  # the trained weights, not the base's
    from transformers import AutoTokenizer

    rendered = AutoTokenizer.from_pretrained(directory).apply_chat_template(
        conversation(QUESTIONS[1]), add_generation_prompt=True, return_dict=True)["input_ids"]
    assert list(rendered) == loaded.formatter.prompt_ids(conversation(QUESTIONS[1]))


def test_a_student_taught_to_answer_stops_where_the_harness_stops(tmp_path: Path) -> None:
    student = make_tiny("llama", seed=0)
    groups = [PromptGroup(f"p{i}", conversation(q), [a]) for i, (q, a) in enumerate(TAUGHT.items())]
    out = tmp_path / "out"
    taught = budget(epochs=60, effective_batch=6, micro_batch=6, learning_rate=1e-2, warmup_ratio=0.0,
                    schedule="constant", max_length=96, max_prompt_length=64)
    train(NLLMethod(), groups, student, taught, 0, tmp_path / "work", out, progress=False)
    complete_model_dir(out, student)  # as the train stage does
    row = make_tiny("llama", seed=0)  # as the pool builds a trained row: the base student, the stored weights
    load_trained_weights(row.model, out)
    ours = harness_answers(row, list(TAUGHT))
    assert [(row.formatter.decode(ids), done) for ids, done in ours] == [(a, True) for a in TAUGHT.values()]
    assert plain_transformers_answers(out, list(TAUGHT)) == ours


def test_a_stop_id_besides_the_eos_stops_plain_generation_too(tmp_path: Path) -> None:
    """A stop id that is not the tokenizer's eos (as Gemma-2's `<end_of_turn>` or Llama-3's `<|eot_id|>` can
    be): here a token the model greedily writes mid-answer, given as a generation-config eos id."""
    from transformers import GenerationConfig

    student = make_tiny("llama", seed=0)
    free = harness_answers(student, QUESTIONS[:1])[0][0]
    extra = free[3]
    assert extra not in student.formatter.stop_ids
    stopping = dataclasses.replace(student, formatter=dataclasses.replace(student.formatter,
                                                                          generation_eos_ids=(extra,)))
    student.model.generation_config.max_length = 99  # a base-model field that must be kept
    student.model.save_pretrained(tmp_path)  # what the trainer stores
    complete_model_dir(tmp_path, stopping)
    config = GenerationConfig.from_pretrained(tmp_path)
    assert config.eos_token_id == sorted({extra, *student.formatter.stop_ids}) and config.max_length == 99
    ours = harness_answers(stopping, QUESTIONS[:1])
    assert ours == [(free[: free.index(extra)], True)]
    assert plain_transformers_answers(tmp_path, QUESTIONS[:1]) == ours


def test_the_context_file_records_what_the_student_saw(pipeline_row: tuple[Path, LoadedModel]) -> None:
    directory, loaded = pipeline_row
    context = json.loads((directory / CONTEXT_FILE).read_text())
    base = {k: v for k, v in loaded.identity.items() if k not in ("trained", "path", "tokenizer_path")}
    assert {k: context["base_model"][k] for k in base} == base and context["base_model"]["model"] == "tiny:llama"
    assert context["chat_format_version"] == CHAT_FORMAT_VERSION and context["date_string"] == "26 Jul 2024"
    assert context["system_prompt"] is None and context["demonstrations"] == [] and "note" not in context


def test_a_student_context_is_recorded(tmp_path: Path) -> None:
    student = make_tiny("llama", seed=0, system_prompt="Answer in French.")
    student = dataclasses.replace(student, formatter=dataclasses.replace(
        student.formatter, demonstrations=(("Hi", "Bonjour"),)))
    complete_model_dir(tmp_path, student)
    context = json.loads((tmp_path / CONTEXT_FILE).read_text())
    assert context["system_prompt"] == "Answer in French."
    assert context["demonstrations"] == [{"user": "Hi", "assistant": "Bonjour"}] and "prepend" in context["note"]
