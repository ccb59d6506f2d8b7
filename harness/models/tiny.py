"""Tiny random-init models for tests and smoke runs: `tiny:<name>` in an experiment file.

The tokenizer is byte-level (256 byte tokens + ChatML specials) and built in memory, so no file or hub
access is needed; the chat template is ChatML, like SmolLM2's. Weights are random with a fixed seed.
Two tiny models built with the same name share a vocabulary (teacher/student KD works); the `tiny:gpt2`
variant has a different vocabulary size on purpose, for the shared-vocabulary check.
"""

from __future__ import annotations

from typing import Any

import torch

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_CONTEXT = 2048  # max_position_embeddings of every tiny model

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    # name -> (architecture, config kwargs)
    "llama": {"arch": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2},
    "llama-wide": {"arch": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 4},
    "gpt2": {"arch": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "extra_vocab": 7},
}


def build_byte_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_encoder = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_encoder))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=SPECIALS,
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.name_or_path = "tiny-byte-chatml"
    return fast


def build_tiny_model(name: str, seed: int = 0, tokenizer: Any | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for `tiny:<name>`; deterministic in (name, seed)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if name not in TINY_CONFIGS:
        from harness.errors import ModelSourceError

        raise ModelSourceError(f"unknown tiny model 'tiny:{name}'; known: {', '.join(sorted(TINY_CONFIGS))}")
    tokenizer = tokenizer or build_byte_tokenizer()
    cfg = dict(TINY_CONFIGS[name])
    arch = cfg.pop("arch")
    vocab = len(tokenizer) + cfg.pop("extra_vocab", 0)
    common = dict(vocab_size=vocab, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                  bos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model: Any
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(max_position_embeddings=TINY_CONTEXT, tie_word_embeddings=True, **common, **cfg))
    else:
        model = GPT2LMHeadModel(GPT2Config(n_positions=TINY_CONTEXT, **common, **cfg))
    model.eval()
    return model, tokenizer
