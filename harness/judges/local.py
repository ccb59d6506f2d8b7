"""`local` judge: an in-process model behind the judge interface (the offline default).

It decodes with the `hf` generation backend (`HFGenerator`, the loop the students' answers come from: the
same batching, stop ids and token accounting), one generator call per batch of at most `batch_size`
requests that decode alike, sorted by prompt length to keep padding small; each batch's answers are
reported as it finishes. Greedy decoding when a request's temperature is 0; otherwise sampled with the
judge's `seed` (every request draws from its own generator seeded with it, so an answer does not depend on
what else is in the batch). When asked, each generated token gets the top-k log-probs of the model's own
next-token distribution (raw logits, temperature 1), as `{token_text: logprob}` like OpenAI's
`top_logprobs`; the end-of-turn token is not listed, as OpenAI does not list the stop token. A token whose
text alone is not valid UTF-8 (part of a multi-byte character) is named by its raw vocabulary string, so
every alternative keeps its own entry.

The conversation is rendered with the model's chat template (`ChatFormatter`); `JudgeSpec.system_prompt`,
when set, is added to requests that carry no system message of their own (same rule as the `openai` judge).
The text is not stripped, so it lines up with the log-probs token by token.
Token counts: `prompt_tokens` is the prompt length, `completion_tokens` the generated tokens including the
end-of-turn token when one was produced. `Params` (`judge.params`): `batch_size`, the sampling `seed` and
`quantization` (the judge model's weights loaded as a model's `quantization:` is, harness.models.quantize).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, Field

from harness.config import JudgeSpec, ModelSpec, Quantization
from harness.errors import HarnessError
from harness.judges.base import Judge, JudgeParams, JudgeRequest, JudgeResponse, OnResult
from harness.models.base import GenerationOutput, GenerationRequest, LoadedModel, SamplingParams
from harness.models.hf_generator import HFGenerator, TopK


class LocalJudge(Judge):
    """An in-process model as judge: greedy decoding with top-k log-probs, batched, fully offline."""

    class Params(JudgeParams):
        batch_size: int = Field(8, ge=1)
        """Requests decoded together."""
        seed: int = 0
        """Seed of sampled (temperature > 0) answers."""
        quantization: Quantization | None = None
        """The judge model's weights loaded quantized, as a model's `quantization:` is (JudgeSpec has none of
        its own)."""

    result_params = ("seed", "quantization")  # in the judgements' key only when set (judge_key)
    reports_incrementally = True
    supports_prefill = True  # the reply's first tokens are simply part of the prompt

    def __init__(self, loaded: LoadedModel, *, system_prompt: str | None = None, batch_size: int = 8,
                 seed: int = 0) -> None:
        self.loaded = loaded
        self.system_prompt = system_prompt
        self.batch_size = max(1, batch_size)
        self.seed = seed
        self._token_text: dict[int, str] = {}
        self._generator: HFGenerator | None = None

    @classmethod
    def from_spec(cls, spec: JudgeSpec, params: BaseModel | Mapping[str, Any] | None = None, *,
                  local_model_loader: Callable[[ModelSpec], LoadedModel] | None = None) -> LocalJudge:
        settings = cls.parse_params(params)
        if local_model_loader is None:
            from harness.models.sources import load_model

            local_model_loader = load_model
        options = dict(settings)
        loaded = local_model_loader(ModelSpec(model=spec.model, quantization=options.pop("quantization")))
        return cls(loaded, system_prompt=spec.system_prompt, **options)

    @classmethod
    def preflight(cls, spec: JudgeSpec) -> str | None:
        """A quantization the judge's model cannot load with here (nf4 on CPUs, a missing package)."""
        from harness.models.quantize import quantization_problem
        from harness.models.sources import resolve_device

        try:
            settings = cls.parse_params(spec.params)
        except HarnessError as exc:
            return str(exc)
        model = ModelSpec(model=spec.model, quantization=getattr(settings, "quantization", None))
        problem = quantization_problem(model, resolve_device(model))
        return f"params.quantization: {problem}" if problem else None

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "local", "model": self.loaded.identity, "system_prompt": self.system_prompt,
                "logprobs": "raw-logits", "sampling_seed": self.seed, "sampler": "hf-generator"}

    # -- public API -----------------------------------------------------------------------------------
    def complete(self, requests: list[JudgeRequest], progress: str | None = None,
                 on_result: OnResult | None = None) -> list[JudgeResponse]:
        prompts = [self._prompt_ids(r) for r in requests]
        results: list[JudgeResponse | None] = [None] * len(requests)
        for group in self._groups(requests, prompts):
            answers = self._generate([prompts[i] for i in group], requests[group[0]])
            for i, response in zip(group, answers, strict=True):
                results[i] = response
                self.usage.record(response, 0.0, 0.0)
                if on_result is not None:
                    on_result(i, response)
        return [r for r in results if r is not None]

    # -- helpers --------------------------------------------------------------------------------------
    def _prompt_ids(self, request: JudgeRequest) -> list[int]:
        messages = request.as_messages()
        if self.system_prompt and not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        ids = self.loaded.formatter.prompt_ids(messages)
        if request.prefill:
            ids = ids + list(self.loaded.tokenizer.encode(request.prefill, add_special_tokens=False))
        return ids

    def _groups(self, requests: list[JudgeRequest], prompts: list[list[int]]) -> list[list[int]]:
        """Indices grouped into batches of requests that decode alike, shortest prompts first."""
        by_settings: dict[tuple[int, float, int | None], list[int]] = {}
        for i, r in enumerate(requests):
            by_settings.setdefault((r.max_tokens, r.temperature, r.top_logprobs), []).append(i)
        groups: list[list[int]] = []
        for indices in by_settings.values():
            indices = sorted(indices, key=lambda i: len(prompts[i]))
            groups.extend(indices[s:s + self.batch_size] for s in range(0, len(indices), self.batch_size))
        return groups

    def generator(self) -> HFGenerator:
        """The `hf` backend around the judge's model, stopping on the formatter's stop ids and every
        generation-config eos id of the model (a formatter built without them gets them added)."""
        if self._generator is None:
            from harness.models.sources import generation_eos_ids

            loaded, formatter = self.loaded, self.loaded.formatter
            missing = set(generation_eos_ids(loaded.model)) - set(formatter.stop_ids)
            if missing:
                formatter = dataclasses.replace(
                    formatter, generation_eos_ids=tuple(sorted({*formatter.generation_eos_ids, *missing})))
                loaded = dataclasses.replace(loaded, formatter=formatter)
            self._generator = HFGenerator(loaded, batch_size=self.batch_size)
        return self._generator

    def _generate(self, prompts: list[list[int]], settings: JudgeRequest) -> list[JudgeResponse]:
        generator = self.generator()
        requests = [GenerationRequest(list(p), seed=self.seed) for p in prompts]
        params = SamplingParams(temperature=settings.temperature, top_p=1.0, max_new_tokens=settings.max_tokens)
        self.usage.attempts += 1
        outputs: list[GenerationOutput]
        tops: list[list[TopK] | None]
        if settings.top_logprobs is not None:
            scored = generator.generate_with_top_logprobs(requests, params, settings.top_logprobs)
            outputs, tops = list(scored), [out.top_logprobs[0] for out in scored]
        else:
            outputs = generator.generate(requests, params)
            tops = [None] * len(outputs)
        tok = self.loaded.tokenizer
        responses = []
        for prompt, out, top in zip(prompts, outputs, tops, strict=True):
            content_ids, finished = out.token_ids[0], out.finished[0]
            responses.append(JudgeResponse(
                text=tok.decode(content_ids, skip_special_tokens=True),
                top_logprobs=None if top is None else [self._alternatives(step) for step in top],
                prompt_tokens=len(prompt), completion_tokens=len(content_ids) + (1 if finished else 0),
                extra={"finish_reason": "stop" if finished else "length"}))
        return responses

    def _alternatives(self, top: TopK) -> dict[str, float]:
        alternatives: dict[str, float] = {}
        for token_id, value in top:
            text = self._text_of(token_id)
            if text not in alternatives:  # best first, so the first one is the larger
                alternatives[text] = float(value)
        return alternatives

    def _text_of(self, token_id: int) -> str:
        text = self._token_text.get(token_id)
        if text is None:
            tok = self.loaded.tokenizer
            text = tok.decode([token_id])
            if "\ufffd" in text:
                text = str(tok.convert_ids_to_tokens(token_id))
            self._token_text[token_id] = text
        return text
