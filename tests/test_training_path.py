"""The paper's training path, as a GPU user runs it: a bf16 student trains on fp32 master weights with
dropout off; responses end with the chat template's end-of-turn token (Gemma-2, Llama-3.1, ChatML) and a
response cut at sampling ends with none; PAD trains bitwise the same in two fresh processes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_tiny
from helpers.training import NLLMethod, budget, make_groups
from safetensors.torch import load_file

from harness.config import SamplingConfig
from harness.methods.base import LossOutput, PromptGroup, TrainContext
from harness.models.base import GenerationRequest, LoadedModel, SamplingParams
from harness.models.chat import ChatFormatter, end_of_turn_from_template
from harness.models.hf_generator import HFGenerator
from harness.sampling import sample_prompts
from harness.training import train
from harness.training.precision import disable_dropout, resolve_mixed_precision

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# --- fp32 master weights --------------------------------------------------------------------------


def test_bf16_student_trains_fp32_master_weights_and_stores_fp32(tmp_path: Path) -> None:
    student = make_tiny("llama", seed=0)
    student.model.to(torch.bfloat16)
    initial = {k: v.detach().float().clone() for k, v in student.model.state_dict().items()}
    b = budget(max_steps=2, epochs=None, learning_rate=1e-5, warmup_ratio=0.0, schedule="constant")
    train(NLLMethod(), make_groups(8), student, b, 0, tmp_path / "work", tmp_path / "out", progress=False)

    stored = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert {t.dtype for t in stored.values()} == {torch.float32}
    assert json.loads((tmp_path / "out" / "config.json").read_text()).get("dtype") == "float32"
    moved = sum(int((stored[k] != initial[k]).sum()) for k in stored)
    total = sum(stored[k].numel() for k in stored)
    # bf16 weights updated in bf16 keep ~85% of their elements at lr 1e-5 (measured); fp32 moves them all.
    assert moved / total > 0.99, moved / total


def test_auto_precision_follows_a_bf16_student() -> None:
    assert resolve_mixed_precision("auto", torch.bfloat16) == "bf16"
    assert resolve_mixed_precision("no", torch.bfloat16) == "no"
    if not torch.cuda.is_available():
        assert resolve_mixed_precision("auto", torch.float32) == "no"


class DropoutProbe(NLLMethod):
    """NLL, plus the largest difference between two forward passes of the same batch (0 without dropout)."""

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], ctx: TrainContext) -> LossOutput:
        out = super().loss(model, batch, ctx)
        packed = batch["packed"]
        with torch.no_grad():
            a = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits
            b = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits
        out.metrics["dropout_gap"] = float((a - b).abs().max())
        return out


def test_dropout_is_off_while_training(tmp_path: Path) -> None:
    student = make_tiny("gpt2", seed=0)  # GPT-2 configs carry 0.1 dropout on embeddings, attention, residuals
    assert student.model.config.resid_pdrop > 0
    result = train(DropoutProbe(), make_groups(8), student, budget(max_steps=2, epochs=None), 0, tmp_path / "w",
                   tmp_path / "o", progress=False)
    assert [row["dropout_gap"] for row in result.log_rows] == [0.0, 0.0]


def test_disable_dropout_also_zeroes_functional_attention_dropout() -> None:
    model = make_tiny("llama", seed=0).model
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.3
    disable_dropout(model)
    assert all(layer.self_attn.attention_dropout == 0.0 for layer in model.model.layers)


# --- the end-of-turn token from the chat template -------------------------------------------------

GEMMA2_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
LLAMA31_TEMPLATE = (
    "{{- bos_token }}{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = \"\" %}{%- endif %}"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting Knowledge Date: December 2023\\n\" }}"
    "{{- \"Today Date: 26 Jul 2024\\n\\n\" }}{{- system_message }}{{- \"<|eot_id|>\" }}"
    "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
    " + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# (template, special tokens, bos, eos, pad, the end-of-turn token). The eos each family's tokenizer names is
# NOT its end of turn: Gemma-2-it's <eos>, the original Llama-3 tokenizer's <|end_of_text|>, Qwen's <|endoftext|>.
FAMILIES = {
    "gemma2": (GEMMA2_TEMPLATE, ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
               "<bos>", "<eos>", "<pad>", "<end_of_turn>"),
    "llama31": (LLAMA31_TEMPLATE, ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                   "<|end_header_id|>", "<|eot_id|>"],
                "<|begin_of_text|>", "<|end_of_text|>", "<|end_of_text|>", "<|eot_id|>"),
    "chatml": (CHATML_TEMPLATE, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
               None, "<|endoftext|>", "<|endoftext|>", "<|im_end|>"),
}


def family_tokenizer(family: str) -> Any:
    """A byte-level tokenizer carrying the family's chat template and special tokens (built here, no hub)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    template, specials, bos, eos, pad, _ = FAMILIES[family]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(sorted(alphabet))}, merges=[], ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   additional_special_tokens=specials)
    fast.chat_template = template
    return fast


def family_model(family: str) -> LoadedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = family_tokenizer(family)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id)).eval()
    return LoadedModel(model=model, tokenizer=tok, formatter=ChatFormatter(tok), identity={"model": family})


class Biased(torch.nn.Module):
    """Wraps a model so that one token gets a huge logit: it is always generated next."""

    def __init__(self, inner: torch.nn.Module, token: int) -> None:
        super().__init__()
        self.inner, self.token = inner, token

    def forward(self, **kwargs: Any) -> Any:
        out = self.inner(**kwargs)
        out.logits[..., self.token] += 100.0
        return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_end_of_turn_comes_from_the_chat_template(family: str) -> None:
    loaded = family_model(family)
    tok, fmt = loaded.tokenizer, loaded.formatter
    eot = tok.convert_tokens_to_ids(FAMILIES[family][-1])
    assert fmt.end_of_turn_id == end_of_turn_from_template(tok) == eot != tok.eos_token_id
    assert set(fmt.stop_ids) == {eot, tok.eos_token_id}

    # Training targets: the prompt + a finished response are exactly the template's rendering of the
    # conversation, its whole turn suffix included (Gemma-2 and ChatML: the end-of-turn token + a newline);
    # a response cut at sampling carries no end at all.
    messages = [{"role": "user", "content": "Name a colour."}]
    rendered = tok.apply_chat_template(messages + [{"role": "assistant", "content": "Blue."}], tokenize=False)
    ours = fmt.prompt_ids(messages) + fmt.response_ids("Blue.")
    assert ours == tok(rendered, add_special_tokens=False)["input_ids"] and fmt.turn_suffix_ids[0] == eot
    assert fmt.response_ids("Blue.", finished=False) == ours[len(fmt.prompt_ids(messages)):-len(fmt.turn_suffix_ids)]

    # Generation stops on the end-of-turn token (and drops it) ...
    request = GenerationRequest(fmt.prompt_ids(messages), seed=1)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=5)
    stopped = HFGenerator(dataclasses.replace(loaded, model=Biased(loaded.model, eot))).generate([request], greedy)[0]
    assert stopped.token_ids == [[]] and stopped.finished == [True]
    # ... and on every generation-config eos id.
    other = tok("x", add_special_tokens=False)["input_ids"][0]
    with_config = dataclasses.replace(loaded, model=Biased(loaded.model, other),
                                      formatter=dataclasses.replace(fmt, generation_eos_ids=(other,)))
    assert HFGenerator(with_config).generate([request], greedy)[0].finished == [True]


def test_end_of_turn_override_and_its_error() -> None:
    tok = family_tokenizer("gemma2")
    assert ChatFormatter(tok, end_of_turn="<eos>").end_of_turn_id == tok.eos_token_id
    from harness.errors import ModelSourceError

    with pytest.raises(ModelSourceError, match="not one token"):
        _ = ChatFormatter(tok, end_of_turn="two tokens").end_of_turn_id


# --- unfinished samples ---------------------------------------------------------------------------


def test_cut_samples_stay_cut_through_sampling_and_training_batches() -> None:
    from baselines.kd import collate_topk, topk_examples
    from baselines.sft import SFTMethod, collate_responses
    from harness.methods.base import Signal
    from harness.methods.pad import PADMethod
    from harness.stages.data import groups_from

    tiny = make_tiny("llama", seed=0)
    eot = tiny.formatter.end_of_turn_id
    prompts = [{"prompt_id": f"p{i}", "messages": [{"role": "user", "content": f"Say {i}."}]} for i in range(3)]
    cfg = SamplingConfig(candidates=3, n=2, max_new_tokens=6, temperature=1.0, top_p=1.0)
    result = sample_prompts(HFGenerator(tiny), tiny.formatter, prompts, cfg, progress=False)
    flags = [f for rec in result.records for f in rec["finished"]]
    assert flags and not any(flags)  # a random tiny model never ends within 6 tokens
    assert result.stats["unfinished_responses"] == len(flags)

    groups = groups_from(result.records, {Signal.TEACHER_AVG_LOGPROB: [[0.0, -1.0]] * len(result.records)})
    ctx = TrainContext(formatter=tiny.formatter, max_length=96, max_prompt_length=64)
    sft = SFTMethod({"preference": "teacher_logprob"})
    packed = collate_responses(sft.build_examples(groups, None), ctx)["packed"]  # type: ignore[arg-type]
    last = [int(row[mask.bool()][-1]) for row, mask in zip(packed.input_ids, packed.response_mask, strict=True)]
    assert eot not in last
    pad = PADMethod({"alpha": 1.0, "mcq_filter": False})
    pad_batch = pad.collate(pad.build_examples(groups, None), ctx)  # type: ignore[arg-type]
    pad_packed = pad_batch["packed"]
    assert eot not in pad_packed.input_ids[pad_packed.response_mask.bool()].tolist()
    # Finished ones do end with it, and the rest of the template's turn suffix (the same groups, flags flipped).
    done = [dataclasses.replace(g, finished=[True, True]) for g in groups]
    packed = collate_responses(sft.build_examples(done, None), ctx)["packed"]  # type: ignore[arg-type]
    suffix = list(tiny.formatter.turn_suffix_ids)
    assert suffix[0] == eot and all(row[mask.bool()][-len(suffix):].tolist() == suffix
                                    for row, mask in zip(packed.input_ids, packed.response_mask, strict=True))
    topk = {"ids": [torch.zeros((9, 2), dtype=torch.long)] * 2, "logprobs": [torch.zeros((9, 2))] * 2}
    kd_groups = [PromptGroup(g.prompt_id, g.messages, g.responses, {Signal.TEACHER_TOPK: topk}, g.finished)
                 for g in groups]
    kd = collate_topk(topk_examples(kd_groups, "all"), ctx)["packed"]
    assert eot not in kd.input_ids[kd.response_mask.bool()].tolist()


def test_drop_unfinished_drops_cut_candidates_before_selection() -> None:
    tiny = make_tiny("llama", seed=0)
    prompts = [{"prompt_id": "p0", "messages": [{"role": "user", "content": "Hi."}]}]
    cfg = SamplingConfig(candidates=3, n=2, max_new_tokens=4, drop_unfinished=True)
    result = sample_prompts(HFGenerator(tiny), tiny.formatter, prompts, cfg, progress=False)
    assert result.records == [] and result.dropped == ["p0"] and result.stats["unfinished_candidates"] == 3


# --- PAD is bitwise reproducible ------------------------------------------------------------------


def test_every_scored_position_is_distinct_in_the_shared_prompt_layout() -> None:
    """One position predicting the first token of several responses made the gather's backward add
    colliding gradients in a thread-dependent order (PAD trainings differed in the last bits)."""
    from harness.methods.shared_prompt import pack_groups

    packed = pack_groups([[5, 6, 7]] * 2, [[[1, 2], [3], [4, 4, 4], [9]]] * 2, 0, 64, 32)
    positions = list(zip(packed.rows.tolist(), packed.cols.tolist(), strict=True))
    assert len(positions) == len(set(positions)) == 2 * (2 + 1 + 3 + 1)


PAD_SCRIPT = textwrap.dedent("""
    import hashlib, sys, tempfile
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from conftest import make_tiny
    from harness.config import Budget
    from harness.methods.base import PromptGroup, Signal
    from harness.methods.pad import PADMethod
    from harness.training import train

    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    groups = [PromptGroup(f"p{i}", [{"role": "user", "content": " ".join(words[i:i + 3]) + "?"}],
                          [" ".join(words[(i + j) % 8:(i + j) % 8 + 1 + j]) for j in range(4)],
                          {Signal.MCQ_PREFERENCE: [[0.5 if a == b else 0.3 + 0.1 * ((a * 3 + b + i) % 5)
                                                    for b in range(4)] for a in range(4)]})
              for i in range(8)]
    budget = Budget(epochs=1, effective_batch=4, micro_batch=2, max_length=64, max_prompt_length=32,
                    learning_rate=1e-3, warmup_ratio=0.0)
    with tempfile.TemporaryDirectory() as d:
        train(PADMethod({"mcq_filter": False}), groups, make_tiny("llama", seed=0), budget, 0, Path(d) / "w",
              Path(d) / "o", progress=False)
        print(hashlib.sha256((Path(d) / "o" / "model.safetensors").read_bytes()).hexdigest())
""")


@pytest.mark.slow  # two fresh Python processes, each importing torch and training
def test_pad_trains_bitwise_equal_in_two_fresh_processes(tmp_path: Path) -> None:
    script = tmp_path / "train_pad.py"
    script.write_text(PAD_SCRIPT)
    tests_dir = str(Path(__file__).resolve().parent)
    digests = [subprocess.run([sys.executable, str(script), tests_dir], capture_output=True, text=True, check=True,
                              timeout=300).stdout.strip().splitlines()[-1] for _ in range(2)]
    assert digests[0] == digests[1] and len(digests[0]) == 64
    assert hashlib.sha256(b"").hexdigest() not in digests


# --- every data filter is in the trainset key -----------------------------------------------------


def _trainset_key(methods: list[dict[str, Any]], tmp_path: Path) -> str:
    import yaml

    from harness.config import parse_experiment
    from harness.pipeline import Pipeline

    data = yaml.safe_load((Path(__file__).resolve().parents[1] / "leaderboards" / "tiny.yaml").read_text())
    data["methods"] = methods
    return Pipeline(parse_experiment(data), tmp_path, progress=False).build_plan().trainset.artifact.key


def test_toggling_a_filter_replans_the_trainset_and_other_params_do_not(tmp_path: Path) -> None:
    base = [{"name": "pad", "params": {"mcq_filter": True}}, {"name": "dpo"}]
    key = _trainset_key(base, tmp_path)
    assert _trainset_key([{"name": "pad", "params": {"mcq_filter": False}}, {"name": "dpo"}], tmp_path) != key
    # PAD narrows its filter's key to `mcq_filter`: its loss params re-train PAD only, not every method.
    assert _trainset_key([{"name": "pad", "params": {"mcq_filter": True, "beta": 3.0}}, {"name": "dpo"}],
                         tmp_path) == key
    assert _trainset_key([{"name": "pad", "params": {"mcq_filter": True}}, {"name": "dpo", "params": {"beta": 1}}],
                         tmp_path) == key


def test_a_plugin_filter_is_keyed_without_declaring_anything() -> None:
    from pydantic import BaseModel, ConfigDict

    from harness.methods.base import Method

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        min_words: int = 3
        lr_scale: float = 1.0

    class Filtering(NLLMethod):
        name = "filtering"

        def filter_groups(self, groups: list[PromptGroup]) -> list[PromptGroup]:
            return [g for g in groups if len(g.responses[0].split()) >= self.params.min_words]

    Filtering.Params = Params
    assert NLLMethod().filter_identity() is None  # keeps every prompt: not in the key
    ident = Filtering({"min_words": 3}).filter_identity()
    assert ident is not None and ident["params"] == {"min_words": 3, "lr_scale": 1.0}
    assert Filtering({"min_words": 4}).filter_identity() != ident
    Filtering.filter_params = ("nope",)
    with pytest.raises(TypeError, match="nope"):
        Filtering().filter_identity()
    assert Method.filter_params is None
