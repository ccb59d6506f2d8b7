"""`local` judge: an in-process model behind the judge interface (the offline default).

Greedy decoding when a request's temperature is 0; otherwise sampling with a fixed seed (one request at a
time, so the draw does not depend on what else is in the batch). Greedy requests are batched with left
padding, sorted by length to keep padding small. When asked, each generated token gets the top-k
log-probs of the model's own next-token distribution (raw logits, temperature 1), as `{token_text: logprob}`
like OpenAI's `top_logprobs`; the end-of-turn token is not listed, as OpenAI does not list the stop token.
A token whose text alone is not valid UTF-8 (part of a multi-byte character) is named by its raw vocabulary
string, so every alternative keeps its own entry.

The conversation is rendered with the model's chat template (`ChatFormatter`); `JudgeSpec.system_prompt`,
when set, is added to requests that carry no system message of their own (same rule as the `openai` judge).
The text is not stripped, so it lines up with the log-probs token by token.
Token counts: `prompt_tokens` is the prompt length, `completion_tokens` the generated tokens including the
end-of-turn token when one was produced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.config import JudgeSpec
from harness.judges.base import Judge, JudgeRequest, JudgeResponse
from harness.judges.cache import JudgeUsage
from harness.models.base import LoadedModel


class LocalJudge(Judge):
    """An in-process model as judge: greedy decoding with top-k log-probs, batched, fully offline."""

    reports_incrementally = True
    supports_prefill = True  # the reply's first tokens are simply part of the prompt

    def __init__(self, loaded: LoadedModel, *, system_prompt: str | None = None, batch_size: int = 8,
                 seed: int = 0) -> None:
        self.loaded = loaded
        self.system_prompt = system_prompt
        self.batch_size = max(1, batch_size)
        self.seed = seed
        self.usage = JudgeUsage()
        self._token_text: dict[int, str] = {}

    @classmethod
    def from_spec(cls, spec: JudgeSpec, *, local_model_loader: Callable[[Any], LoadedModel] | None = None,
                  **options: Any) -> LocalJudge:
        from harness.config import ModelSpec

        if local_model_loader is None:
            from harness.models.sources import load_model

            local_model_loader = load_model
        loaded = local_model_loader(ModelSpec(model=spec.model))
        return cls(loaded, system_prompt=spec.system_prompt, **options)

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "local", "model": self.loaded.identity, "system_prompt": self.system_prompt,
                "logprobs": "raw-logits", "sampling_seed": self.seed}

    # -- public API -----------------------------------------------------------------------------------
    def complete(self, requests: list[JudgeRequest], progress: str | None = None,
                 on_result: Callable[[int, JudgeResponse], None] | None = None) -> list[JudgeResponse]:
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
        """Indices grouped into batches of requests that decode alike; sampled requests go alone."""
        by_settings: dict[tuple[int, float, int | None], list[int]] = {}
        for i, r in enumerate(requests):
            by_settings.setdefault((r.max_tokens, r.temperature, r.top_logprobs), []).append(i)
        groups: list[list[int]] = []
        for (_, temperature, _), indices in by_settings.items():
            if temperature > 0:
                groups.extend([i] for i in indices)
                continue
            indices = sorted(indices, key=lambda i: len(prompts[i]))
            groups.extend(indices[s:s + self.batch_size] for s in range(0, len(indices), self.batch_size))
        return groups

    def _stop_ids(self) -> list[int]:
        from harness.models.sources import generation_eos_ids

        return sorted(set(self.loaded.formatter.stop_ids) | set(generation_eos_ids(self.loaded.model)))

    def _generate(self, prompts: list[list[int]], settings: JudgeRequest) -> list[JudgeResponse]:
        import torch
        from transformers import GenerationConfig

        model, tok = self.loaded.model, self.loaded.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.loaded.formatter.end_of_turn_id
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], dtype=torch.long)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
        stop_ids = self._stop_ids()
        sample = settings.temperature > 0
        config = GenerationConfig(max_new_tokens=settings.max_tokens, do_sample=sample,
                                  temperature=settings.temperature if sample else None,
                                  top_p=None, top_k=None, eos_token_id=stop_ids, pad_token_id=pad_id,
                                  output_logits=settings.top_logprobs is not None,
                                  return_dict_in_generate=True)
        if sample:
            torch.manual_seed(self.seed)
        device = getattr(model, "device", None) or "cpu"
        self.usage.attempts += 1
        with torch.no_grad():
            out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                 generation_config=config)
        generated = out.sequences[:, width:].tolist()
        responses = []
        for row, ids in enumerate(generated):
            length = next((n for n, t in enumerate(ids) if t in stop_ids), None)
            content_ids = ids if length is None else ids[:length]
            top = None
            if settings.top_logprobs is not None:
                top = [self._top_logprobs(out.logits[step][row], settings.top_logprobs)
                       for step in range(len(content_ids))]
            responses.append(JudgeResponse(
                text=tok.decode(content_ids, skip_special_tokens=True), top_logprobs=top,
                prompt_tokens=len(prompts[row]),
                completion_tokens=len(content_ids) + (0 if length is None else 1),
                extra={"finish_reason": "length" if length is None else "stop"}))
        return responses

    def _top_logprobs(self, logits: Any, k: int) -> dict[str, float]:
        import torch

        logprobs = torch.log_softmax(logits.float(), dim=-1)
        values, ids = torch.topk(logprobs, min(k, logprobs.shape[-1]))
        alternatives: dict[str, float] = {}
        for value, token_id in zip(values.tolist(), ids.tolist(), strict=True):
            text = self._text_of(int(token_id))
            if text not in alternatives:  # topk is sorted, so the first one is the larger
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
