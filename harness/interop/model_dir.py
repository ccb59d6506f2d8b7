"""Every trained student is a complete Hugging Face model directory.

The trainer stores the weights and the model config (harness.training.trainer); this adds what anyone
(plain `transformers`, vLLM given only the directory, the hub) needs to run the student the way the harness
ran it:

- the tokenizer with the chat template the student trained under: the `ChatFormatter`'s tokenizer, which is
  the spec's `tokenizer:` when one was given (Transformers 5 writes the template to `chat_template.jinja`);
- `generation_config.json`: the base model's, with `eos_token_id` = every id the harness stops on
  (`ChatFormatter.stop_ids`: end of turn + eos + the model's own eos ids). Where a template ends a turn with a
  token that is not the eos (Gemma-2 `<end_of_turn>`, Llama-3.x `<|eot_id|>`), `model.generate` and vLLM
  would otherwise talk past the end of the answer;
- `pad_harness.json`: what the files above cannot say: the base model's identity, the chat format version, the
  `date_string` every prompt was rendered with (Llama-3.x templates write today's date without it) and any
  system prompt / demonstrations prepended to every conversation the student saw (the saved template does
  not add them; the student normally has none). The model card (README.md) is written on export
  (harness.interop.hub).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from harness.models.base import LoadedModel
from harness.models.chat import CHAT_FORMAT_VERSION
from harness.store import write_json_atomic

CONTEXT_FILE = "pad_harness.json"


def complete_model_dir(out_dir: Path, loaded: LoadedModel, lora: Any = None) -> None:
    """Write the tokenizer, the generation config and `pad_harness.json` of `loaded` (the base student a
    training run started from) beside the trained weights in `out_dir`. A LoRA run (`lora`, its LoraSpec)
    says so there: the weights are merged, its adapter is in `adapter/`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded.formatter.tokenizer.save_pretrained(str(out_dir))
    stopping_generation_config(loaded).save_pretrained(str(out_dir))
    context = student_context(loaded)
    if lora is not None:
        from harness.training.lora import ADAPTER_DIR

        context["lora"] = {**lora.model_dump(mode="json"), "adapter": f"{ADAPTER_DIR}/",
                           "note": "model.safetensors holds the merged weights (base + B A alpha/r, fp32); the "
                                   "adapter alone, in peft's format, is in adapter/"}
    write_json_atomic(out_dir / CONTEXT_FILE, context)


def stopping_generation_config(loaded: LoadedModel) -> Any:
    """The base model's generation config, stopping on every id the harness stops on."""
    from transformers import GenerationConfig

    base = getattr(loaded.model, "generation_config", None)
    config = copy.deepcopy(base) if base is not None else GenerationConfig()
    config.eos_token_id = list(loaded.formatter.stop_ids)
    # Authored here, not derived from config.json: older transformers replace a config marked as derived
    # with one rebuilt from config.json (whose single eos id would drop the end-of-turn token).
    config._from_model_config = False
    return config


def student_context(loaded: LoadedModel) -> dict[str, Any]:
    """What the student saw besides the template: its base model, chat format, date and context turns."""
    formatter = loaded.formatter
    demonstrations = [{"user": user, "assistant": assistant} for user, assistant in formatter.demonstrations]
    context: dict[str, Any] = {
        "written_by": "pad-harness",
        # Where the base model sat on this machine is no one else's business (and goes to the hub with the card).
        "base_model": {k: v for k, v in loaded.identity.items() if k not in ("path", "tokenizer_path")},
        "chat_format_version": CHAT_FORMAT_VERSION,
        "date_string": formatter.date_string,
        "stop_ids": list(formatter.stop_ids),
        "system_prompt": formatter.system_prompt,
        "demonstrations": demonstrations,
    }
    if formatter.system_prompt or demonstrations:
        context["note"] = ("every conversation this student trained and was evaluated on began with this system "
                           "prompt and these demonstrations; prepend them to reproduce its behaviour")
    return context
