"""tests/gpu/check.py, the GPU check (issue 17), in its CPU tiny mode: it runs where only torch, transformers,
accelerate and peft (and what they require) are installed, imports nothing else from its own code or the
repository modules it uses, prints a sane JSON table, and computes exactly what PAD and DPO train with."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata as md
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / "tests" / "gpu" / "check.py"

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def load_check() -> ModuleType:
    if "gpu_check" in sys.modules:
        return sys.modules["gpu_check"]
    spec = importlib.util.spec_from_file_location("gpu_check", CHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- a bare box, simulated


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def required_distributions(roots: tuple[str, ...]) -> list[md.Distribution]:
    """The installed distributions `roots` need: themselves and their required dependencies, transitively
    (extras left out): what `pip install torch transformers accelerate peft` puts on a bare box."""
    found: dict[str, md.Distribution] = {}
    todo = list(roots)
    while todo:
        name = _normalise(todo.pop())
        if name in found:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # peft is allowed but not installed here; the check does not use it
        found[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(found.values())


def bare_site(tmp: Path, roots: tuple[str, ...]) -> Path:
    """A directory holding links to those distributions' top-level modules and metadata only."""
    site = tmp / "site"
    site.mkdir()
    for dist in required_distributions(roots):
        for file in dist.files or []:
            top = file.parts[0]
            if top in ("..", "__pycache__") or (site / top).exists():
                continue
            (site / top).symlink_to(Path(str(dist.locate_file(top))))
    return site


# Run in `python -S` (no site-packages, no .pth files), with the bare site on PYTHONPATH: refuses, from any
# file of the repository, an import of a top-level module outside the standard library and the allowed
# packages (an `__import__` hook sees every import statement, cached modules included), runs the check, and
# reports what was imported and what was refused.
GUARD = r"""
import builtins, json, runpy, sys
repo, check, allowed = sys.argv[1], sys.argv[2], set(sys.argv[3].split(","))
allowed |= set(sys.stdlib_module_names)
refused, seen = [], set()
original = builtins.__import__

def guarded(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__file__") or ""
    if level == 0 and importer.startswith(repo):
        top = name.partition(".")[0]
        seen.add(top)
        if top not in allowed:
            refused.append((importer, name))
            raise ImportError(f"the GPU check may not import {name!r} (from {importer})")
    return original(name, globals, locals, fromlist, level)

builtins.__import__ = guarded
sys.argv = [check, *sys.argv[4:]]
code = 0
try:
    runpy.run_path(check, run_name="__main__")
except SystemExit as stop:
    code = stop.code
finally:
    tops = sorted({m.partition(".")[0] for m in sys.modules} - set(sys.stdlib_module_names))
    print("GUARD " + json.dumps({"refused": refused, "imported_by_repo": sorted(seen), "modules": tops}),
          file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any], str]:
    check = load_check()
    site = bare_site(tmp_path_factory.mktemp("bare"), check.ALLOWED_PACKAGES)
    allowed = ",".join((*check.ALLOWED_PACKAGES, *check.REPO_PACKAGES))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-S", "-c", GUARD, str(REPO) + os.sep, str(CHECK), allowed,
                           "--device", "cpu", "--tiny"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    guard_lines = [line for line in proc.stderr.splitlines() if line.startswith("GUARD ")]
    assert guard_lines, proc.stderr[-3000:]
    guard = json.loads(guard_lines[-1].removeprefix("GUARD "))
    assert not guard["refused"], guard["refused"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), guard, proc.stderr


def test_the_tiny_mode_runs_with_only_the_allowed_packages(tiny_run: tuple[dict[str, Any], dict[str, Any], str]) -> None:
    table, guard, _ = tiny_run
    # The simulated box really is bare: the harness's other dependencies are not there to be found.
    assert not {"lm_eval", "alpaca_eval", "openai", "xxhash", "sklearn", "scipy"} & set(guard["modules"])
    assert set(guard["imported_by_repo"]) - set(sys.stdlib_module_names) <= {"torch", "transformers", "harness",
                                                                             "baselines", "accelerate"}
    assert "pydantic" not in guard["imported_by_repo"]
    assert table["ok"] is True


def test_the_table_has_every_section_and_sane_figures(tiny_run: tuple[dict[str, Any], dict[str, Any], str]) -> None:
    table, _, stderr = tiny_run
    assert table["mode"] == "tiny" and table["device"]["type"] == "cpu"
    rows = {row["section"]: row for row in table["rows"]}
    assert list(rows) == ["build", "master_weights", "pad", "dpo", "generation"]
    assert all(row["status"] == "ok" and row["elapsed_s"] >= 0 for row in rows.values())
    assert table["model"]["shares_prompts"] is True and table["model"]["attn_implementation"] == "sdpa"
    for name in ("pad", "dpo"):
        row = rows[name]
        assert row["shared_prompt"] is True and row["timed_steps"] >= 1
        assert row["tokens_per_s"] > 0 and row["sequence_tokens_per_s"] > row["tokens_per_s"]  # prompts shared
        assert row["losses"] and all(math.isfinite(x) for x in row["losses"])
        assert row["mfu"] is None and row["mfu_with_attention"] is None  # no peak FLOP/s for a CPU
        assert 0 < row["attention_flops_share"] < 1
        assert row["peak_memory_gib"] > 0
    assert rows["pad"]["responses_per_prompt"] == 4 and rows["dpo"]["responses_per_prompt"] == 2
    master = rows["master_weights"]
    assert (master["loaded_dtype"], master["master_dtype"], master["learning_rate"]) == ("bfloat16", "float32", 8e-7)
    assert master["fp32_master_moved_fraction"] > 0.9  # fp32 master weights move at lr 8e-7 ...
    assert master["bf16_adamw_moved_fraction"] < 0.1  # ... a bf16 AdamW copy rounds the update away
    gen = rows["generation"]
    assert gen["new_tokens_per_row"] == table["shapes"]["gen_new_tokens"] and gen["tokens_per_s"] > 0
    assert set(table["elapsed_s"]) == {"imports", "build", "master_weights", "pad", "dpo", "generation", "total"}
    assert table["summary"]["pad_tokens_per_s"] == rows["pad"]["tokens_per_s"]
    assert "generation: " in stderr  # progress and per-section elapsed time go to stderr


def test_the_check_and_its_repository_modules_import_only_allowed_packages() -> None:
    """Static, so it also covers lines the CPU run does not reach (CUDA-only ones): every import in the
    files a bare box needs is the standard library, an allowed package, or one of those files (with every
    package __init__ it runs)."""
    check = load_check()
    files = set(check.REPO_FILES)
    allowed = set(sys.stdlib_module_names) | set(check.ALLOWED_PACKAGES)
    problems = []
    for relative in sorted(files):
        for node in ast.walk(ast.parse((REPO / relative).read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                parts = name.split(".")
                if parts[0] in allowed:
                    continue
                if parts[0] not in check.REPO_PACKAGES:
                    problems.append(f"{relative}: imports {name}")
                    continue
                needed = [f"{'/'.join(parts[:i])}/__init__.py" for i in range(1, len(parts))]
                module = "/".join(parts)
                needed.append(f"{module}.py" if (REPO / f"{module}.py").exists() else f"{module}/__init__.py")
                problems += [f"{relative}: imports {name}, which runs {f} (not in REPO_FILES)"
                             for f in needed if f not in files]
    assert not problems, problems
    size = sum((REPO / f).stat().st_size for f in files)
    assert size < 200_000, size  # what a bare box needs from the repository


# ---------------------------------------------------------------- it measures what the methods train with


class IdsFormatter:
    """A formatter whose 'text' is already token ids: the methods' collate then packs exactly those."""

    class tokenizer:  # noqa: N801
        pad_token_id = 0

    end_of_turn_id = 0
    pad_id = 0

    def prompt_ids(self, messages: list[int], max_length: int | None = None) -> list[int]:
        return list(messages)

    def response_ids(self, response: list[int], max_length: int | None = None, finished: bool = True) -> list[int]:
        return list(response)


def _assert_same_packing(a: Any, b: Any) -> None:
    for field in ("input_ids", "position_ids", "segment", "rows", "cols", "targets", "owner", "slot"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert a.num_sequences == b.num_sequences


def test_pad_and_dpo_steps_are_the_methods_collate_and_loss() -> None:
    from baselines.dpo import DPOMethod
    from harness.methods.base import TrainContext
    from harness.methods.pad import PADMethod

    check = load_check()
    shapes, device = check.TINY, torch.device("cpu")
    vocab = check.TINY_LLAMA["vocab_size"]
    model = check.build_model(check.TINY_LLAMA, device).float()
    ctx = TrainContext(formatter=IdsFormatter(), max_length=shapes.max_length,
                       max_prompt_length=shapes.max_prompt_length, share_prompts=True)
    generator = torch.Generator().manual_seed(1)

    raw = check.pad_raw(generator, shapes, 3, vocab)
    ours = check.pad_batch(raw, shapes, device)
    examples = [{"prompt_id": str(i), "messages": p, "responses": rs, "finished": [True] * len(rs),
                 "teacher_scores": raw["teacher"][i].tolist()} for i, (p, rs) in enumerate(
                     zip(raw["prompts"], raw["responses"], strict=True))]
    pad = PADMethod()
    batch = pad.collate(examples, ctx)
    _assert_same_packing(ours.packed, batch["packed"])
    assert ours.tokens == batch["student_tokens"]
    assert torch.equal(ours.loss(model), pad.loss(model, batch, ctx).loss)

    raw = check.dpo_raw(generator, shapes, 3, vocab)
    ours = check.dpo_batch(raw, shapes, device)
    examples = [{"prompt_id": str(i), "messages": p, "chosen": rs[0], "rejected": rs[1],
                 "ref_chosen": float(raw["ref"][0, i]), "ref_rejected": float(raw["ref"][1, i])}
                for i, (p, rs) in enumerate(zip(raw["prompts"], raw["responses"], strict=True))]
    dpo = DPOMethod()
    batch = dpo.collate(examples, ctx)
    _assert_same_packing(ours.packed, batch["packed"])
    assert ours.tokens == batch["student_tokens"]
    torch.testing.assert_close(ours.loss(model), dpo.loss(model, batch, ctx).loss, rtol=0, atol=0)


def test_the_optimizer_is_the_trainers() -> None:
    from harness.config import Budget
    from harness.training.trainer import _optimizer

    check = load_check()
    model = check.build_model(check.TINY_LLAMA, torch.device("cpu")).float()
    ours = check.adamw(list(model.parameters()), check.LEARNING_RATE)
    theirs = _optimizer(model, Budget(learning_rate=check.LEARNING_RATE))
    assert len(ours.param_groups) == len(theirs.param_groups)
    for a, b in zip(ours.param_groups, theirs.param_groups, strict=True):
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]
        assert {k: v for k, v in a.items() if k != "params"} == {k: v for k, v in b.items() if k != "params"}
    assert check.MAX_GRAD_NORM == Budget().max_grad_norm


def test_the_shape_is_llama_3_2_1b() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    check = load_check()
    config = LlamaConfig(**check.LLAMA_3_2_1B)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads,
            config.intermediate_size, config.vocab_size, config.tie_word_embeddings) == (
        2048, 16, 32, 8, 8192, 128256, True)
    with torch.device("meta"):  # shapes only, no memory
        model = LlamaForCausalLM(config)
    # Llama-3.2-1B's 1,235,814,400 parameters, tied embeddings counted once.
    assert sum(p.numel() for p in model.parameters()) == 1_235_814_400


def test_an_out_of_memory_micro_batch_is_halved_and_retried() -> None:
    check = load_check()
    tried = []

    def run(micro_batch: int) -> dict[str, Any]:
        tried.append(micro_batch)
        if micro_batch > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return {"micro_batch": micro_batch}

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    assert check.with_oom_retry(run, 4, optimizer, torch.device("cpu")) == {"micro_batch": 1, "oom_retries": 2}
    assert tried == [4, 2, 1]


def test_a_failing_section_is_a_row_of_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    check = load_check()

    def broken(*args: Any) -> None:
        raise RuntimeError("no kernel image is available (simulated)")

    monkeypatch.setattr(check, "build_model", broken)
    table = check.run(check.parse_args(["--device", "cpu", "--tiny"]))
    assert table["ok"] is False and table["summary"]["ok"] is False
    assert table["rows"][0]["section"] == "build"
    assert table["rows"][0]["status"] == "error: RuntimeError: no kernel image is available (simulated)"


def test_the_peak_comes_from_the_accounting_table(monkeypatch: pytest.MonkeyPatch) -> None:
    check = load_check()

    class Properties:
        total_memory = 80 * 2**30

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: Properties())
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    info = check.device_info(torch.device("cuda"), None)
    assert info["peak_bf16_flops"] == 989e12 and info["memory_gib"] == 80.0
    assert info["peak_source"].startswith("harness.training.accounting")
    assert check.device_info(torch.device("cuda"), 500.0)["peak_bf16_flops"] == 500e12


def test_the_full_mode_refuses_a_machine_without_a_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit):
        load_check().parse_args([])


def test_tox_has_a_gpu_env_that_installs_nothing() -> None:
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPO / "tox.ini")
    env = tox["testenv:gpu"]
    assert env["commands"].strip() == "python tests/gpu/check.py {posargs}"
    assert env["skip_install"].strip() == "true" and env["deps"].strip() == ""
    assert env["system_site_packages"].strip() == "true"
