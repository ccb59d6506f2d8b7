"""On-policy samples through vLLM: an engine that follows the weights of the student being trained.

GKD samples from the current student at every on-policy step. With `sampling.backend: vllm` those samples
come from one vLLM engine started for the student when training starts; before a sampling call that
follows an optimizer step, the live weights are written to a scratch safetensors directory and reloaded
into the engine in place (`collective_rpc("reload_weights", weights_path=...)`, vLLM >= 0.11), and the
prefix cache is reset (its KV blocks were computed with the old weights). This is TRL's "colocate" idea,
through files instead of in-memory tensors so it works with the engine in its own process and with
tensor parallelism (each worker reads its own shard). The engine is shut down when training ends.

Cost: one save + reload per optimizer step that samples (for a 135M fp32 student, ~0.5 GB). On a GPU the
engine shares the device with the training run: give it a small `gpu_memory_utilization` / `kv_cache_gib`.

The engine is the backend's own generator (`VLLMGenerator.live_sampler` builds it and hands it over), so
this module needs only what it uses of one: `ReloadableEngine`.
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING, Any, Protocol

from harness.models.base import GenerationOutput, GenerationRequest, SamplingParams

if TYPE_CHECKING:
    import torch


class ReloadableEngine(Protocol):
    """What the live sampler uses of its generator (harness.models.vllm_generator.VLLMGenerator)."""

    engine_starts: int

    @property
    def llm(self) -> Any:
        """The `vllm.LLM`, started on first use."""

    def generate(self, requests: list[GenerationRequest], params: SamplingParams,
                 progress: str | None = None) -> list[GenerationOutput]: ...

    def close(self) -> None: ...


def weights_version(model: torch.nn.Module) -> int:
    """Changes whenever a parameter is updated in place (the optimizer step), without reading weights."""
    return sum(p._version for p in model.parameters())


class VLLMLiveSampler:
    """`sampler(model, prompts, max_new_tokens, seed, temperature=, top_p=)` -> one response (token ids) per
    prompt, sampled by a vLLM engine that holds `model`'s current weights."""

    def __init__(self, generator: ReloadableEngine) -> None:
        # The engine starts from the base student's weights (its identity's path); the first call syncs.
        self.generator = generator
        self._scratch = tempfile.TemporaryDirectory(prefix="pad-harness-live-weights-")
        self._synced: int | None = None
        self.weight_syncs = 0

    @property
    def engine_starts(self) -> int:
        return self.generator.engine_starts

    def __call__(self, model: torch.nn.Module, prompts: list[list[int]], max_new_tokens: int, seed: int,
                 temperature: float = 1.0, top_p: float = 1.0) -> list[list[int]]:
        self.sync(model)
        requests = [GenerationRequest(list(p), seed + i) for i, p in enumerate(prompts)]
        params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
        return [list(out.token_ids[0]) for out in self.generator.generate(requests, params)]

    def sync(self, model: torch.nn.Module) -> None:
        """Load `model`'s weights into the engine unless it already holds them."""
        model = getattr(model, "module", model)  # a DDP wrapper holds the model as .module
        version = weights_version(model)
        if version == self._synced:
            return
        llm = self.generator.llm  # starts the engine on first use
        # save_pretrained writes tied weights once, under the names the checkpoint loader expects.
        from harness.training.lora import is_lora, merged_state_dict

        if is_lora(model):  # a LoRA student: the base's weights with the adapters added, under the base's names
            model.get_base_model().save_pretrained(self._scratch.name, state_dict=merged_state_dict(model),  # type: ignore[operator]
                                                   safe_serialization=True)
        else:
            model.save_pretrained(self._scratch.name, safe_serialization=True)  # type: ignore[operator]
        llm.collective_rpc("reload_weights", kwargs={"weights_path": self._scratch.name})
        llm.reset_prefix_cache()  # cached KV blocks belong to the old weights
        self._synced = version
        self.weight_syncs += 1

    def close(self) -> None:
        self.generator.close()
        self._scratch.cleanup()
