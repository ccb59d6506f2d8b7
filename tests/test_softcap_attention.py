"""Attention logit soft-capping is honoured (issue 23, item 5).

Gemma-2 caps its attention logits (`attn_logit_softcapping`); torch SDPA has no such option, so transformers
versions that ran Gemma-2 (or any soft-capped config) through SDPA silently dropped the cap, and the one
installed here refuses SDPA for it. The harness loads every model whose config sets the cap with `eager`
attention, as the released PAD code does, for training, scoring and hf generation alike, and says so in
the model identity. The test simulates a transformers whose default for Gemma-2 is an SDPA that ignores the
cap (the harness must not depend on a library default), on a tiny random-init Gemma-2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from test_training_path import family_tokenizer

from harness.config import ModelSpec
from harness.models.handles import ModelHandle
from harness.models.hf_generator import HFGenerator
from harness.models.pool import ModelPool
from harness.models.scoring import Scorer
from harness.models.sources import load_model, model_fingerprint, softcapped_attention

CAP = 5.0  # small enough that the (scaled-up) random attention logits hit it


def tiny_gemma2(directory: Path, softcap: float | None = CAP) -> Path:
    """A random-init Gemma-2 whose attention logits are large enough for the cap to matter, saved with a
    Gemma-2-templated tokenizer."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    tok = family_tokenizer("gemma2")
    config = Gemma2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8,
                          attn_logit_softcapping=softcap, pad_token_id=tok.pad_token_id,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(20.0)
            layer.self_attn.k_proj.weight.mul_(20.0)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def reference_scores(directory: Path, groups: list[Any], **kwargs: Any) -> list[float]:
    """Sum log-prob of each response from a plain forward pass of the saved model (one sequence at a time)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, **kwargs).eval()
    out = []
    for prompt, responses in groups:
        for response in responses:
            ids = torch.tensor([prompt + response])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            targets = ids[0, len(prompt):]
            out.append(float(logp[len(prompt) - 1:].gather(-1, targets[:, None]).sum()))
    return out


@pytest.fixture
def sdpa_default_that_ignores_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gemma-2 as transformers versions ran it where SDPA was its default and dropped the cap silently."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.gemma2.modeling_gemma2 import Gemma2PreTrainedModel

    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def ignoring_softcap(*args: Any, softcap: float | None = None, **kwargs: Any) -> Any:
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(Gemma2PreTrainedModel, "_supports_sdpa", True)
    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "sdpa", ignoring_softcap)


def test_softcapped_configs_are_recognised() -> None:
    assert softcapped_attention({"model_type": "gemma2", "attn_logit_softcapping": 50.0})
    assert softcapped_attention({"text_config": {"attn_logit_softcapping": 50.0}})
    assert not softcapped_attention({"model_type": "gemma2", "attn_logit_softcapping": None})
    assert not softcapped_attention({"model_type": "llama"})


def test_softcapped_gemma2_scores_equal_an_eager_forward(tmp_path: Path, sdpa_default_that_ignores_the_cap: None) -> None:
    directory = tiny_gemma2(tmp_path / "gemma2")
    spec = ModelSpec(model=str(directory))
    loaded = load_model(spec, device="cpu")
    fmt = loaded.formatter
    groups = [(fmt.prompt_ids([{"role": "user", "content": "Name a colour, please."}]),
               [fmt.response_ids("Blue."), fmt.response_ids("A shade of green, I think.")])]
    ours = [s.sum_logprob for row in Scorer(loaded).score_groups(groups) for s in row]
    eager = reference_scores(directory, groups, attn_implementation="eager")
    uncapped = reference_scores(directory, groups)  # what the simulated default (SDPA, cap dropped) computes
    assert ours == pytest.approx(eager, abs=1e-4)
    # The cap matters for this model: dropping it moves every score by far more than the tolerance.
    assert min(abs(a - b) for a, b in zip(eager, uncapped, strict=True)) > 0.05

    # The same attention for training (the pool's trainable copy) and hf generation, and in the identity.
    assert loaded.model.config._attn_implementation == "eager"
    trainable = ModelPool({}, 1).fresh_copy(ModelHandle("student", spec, {}))
    assert trainable.model.config._attn_implementation == "eager"
    assert HFGenerator(loaded).loaded.model.config._attn_implementation == "eager"
    assert loaded.identity["attention"] == model_fingerprint(spec, device="cpu")["attention"] == "eager"


def test_a_model_without_the_cap_keeps_the_default_attention(tmp_path: Path) -> None:
    directory = tiny_gemma2(tmp_path / "plain", softcap=None)
    spec = ModelSpec(model=str(directory))
    assert "attention" not in model_fingerprint(spec, device="cpu")
    assert "attention" not in load_model(spec, device="cpu").identity
