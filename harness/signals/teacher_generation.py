"""The teacher answering the run's prompts in its own context (SeqKD's teacher samples)."""

from __future__ import annotations

from typing import Any

from harness.config import SamplingConfig
from harness.models.base import GenerationRequest, Generator, LoadedModel, SamplingParams
from harness.sampling import prompt_seed
from harness.signals.common import SignalResult, group_field


def teacher_samples(
    teacher: LoadedModel, prompts: list[Any], cfg: SamplingConfig, n: int = 1, generator: Generator | None = None,
    temperature: float | None = None, progress: str | None = "teacher samples",
) -> SignalResult:
    """Per prompt {"prompt_id", "responses": [str] * n}: the teacher answering in its own context, for SeqKD.
    Seeds come from (cfg.seed, prompt_id) with a teacher salt, so they never coincide with the sampler's.
    `generator` defaults to an `HFGenerator` around the teacher."""
    if generator is None:
        from harness.models.hf_generator import HFGenerator

        generator = HFGenerator(teacher, batch_size=cfg.batch_size)
    requests = [
        GenerationRequest(
            teacher.formatter.prompt_ids(group_field(p, "messages")),
            seed=prompt_seed(cfg.seed, "teacher:" + str(group_field(p, "prompt_id"))),
            n=n,
        )
        for p in prompts
    ]
    params = SamplingParams(
        temperature=cfg.temperature if temperature is None else temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
    )
    outputs = generator.generate(requests, params, progress=progress)
    generated = sum(len(ids) + int(done) for o in outputs for ids, done in zip(o.token_ids, o.finished, strict=True))
    prompt_tokens = sum(len(r.prompt_ids) for r in requests)
    values = [{"prompt_id": group_field(p, "prompt_id"), "responses": list(o.texts), "finished": list(o.finished)}
              for p, o in zip(prompts, outputs, strict=True)]
    return SignalResult(values, forward_tokens=prompt_tokens, generated_tokens=generated)
