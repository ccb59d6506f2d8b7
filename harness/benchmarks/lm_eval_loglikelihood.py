"""lm-eval's `loglikelihood` requests answered by our `Scorer` (multiple-choice tasks such as arc_easy).

A request is (context, continuation) text; the answer is (sum of the continuation tokens' log-probs given
the context, whether greedy decoding would have produced exactly those tokens). Tokenisation follows lm-eval's
HFLM (`TemplateLM._encode_pair`): trailing whitespace of the context moves to the continuation, the
continuation's tokens are those of encode(context + continuation) after the first len(encode(context)), an
empty context becomes the BOS (else EOS) token, and a context too long for the model is cut from the left.
A context in our chat form (`HarnessLM` renders chat turns as marked JSON) is rendered with the model's own
chat template (its formatter, as in generation) first. Requests that share a context (the choices of one
question) are scored as one group, so the context is encoded once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from harness.benchmarks.lm_eval_chat import context_to_messages, is_chat_context
from harness.models.base import LoadedModel
from harness.models.scoring import Group, Scorer

EncodeFn = Callable[[str], list[int]]


class ContinuationScorer(Scorer):
    """`Scorer` that also says, per response, whether every token is the model's argmax (one pass)."""

    def score_with_greedy(self, groups: list[Group]) -> list[list[tuple[float, bool]]]:
        flat: list[tuple[float, bool] | None] = [None] * sum(len(rs) for _, rs in groups)
        for rows, logits, targets, lengths in self._iter_buckets(groups, progress=None):
            logprobs = torch.log_softmax(logits, dim=-1)  # as score_groups, so sums match it exactly
            token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            mask = torch.arange(token_lp.shape[1], device=token_lp.device)[None, :] < lengths[:, None]
            sums = (token_lp * mask).sum(-1).double().tolist()
            greedy = ((logprobs.argmax(-1) == targets) | ~mask).all(-1).tolist()
            for row, total, is_greedy in zip(rows, sums, greedy, strict=True):
                flat[row] = (float(total), bool(is_greedy))
        out, pos = [], 0
        for _, responses in groups:
            chunk = flat[pos : pos + len(responses)]
            assert all(r is not None for r in chunk), "every response is scored in exactly one bucket"
            out.append([r for r in chunk if r is not None])
            pos += len(responses)
        return out


def _max_length(model: Any) -> int | None:
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _encoder(tokenizer: Any) -> EncodeFn:
    """HFLM's `tok_encode`: the tokenizer's default special tokens, none when the text already starts with BOS."""
    bos = getattr(tokenizer, "bos_token", None)

    def encode(text: str) -> list[int]:
        special = not (bos and text.startswith(bos))
        return list(tokenizer(text, add_special_tokens=special)["input_ids"])

    return encode


def encode_pair(loaded: LoadedModel, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) as lm-eval's HFLM tokenises a loglikelihood request."""
    tokenizer = loaded.tokenizer
    encode = _encoder(tokenizer)
    if context == "":
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        cont = list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
        return ([int(prefix)], cont) if cont[:1] != [prefix] else (cont[:1], cont[1:])
    if is_chat_context(context):
        context = loaded.formatter.prompt_text(context_to_messages(context))
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    context_ids = encode(context)
    whole = encode(context + continuation)
    return context_ids, whole[len(context_ids):]


def make_loglikelihood_fn(loaded: LoadedModel, batch_size: int = 8
                          ) -> Callable[[list[tuple[str, str]]], list[tuple[float, bool]]]:
    scorer = ContinuationScorer(loaded, batch_size)
    max_length = _max_length(loaded.model)

    def loglikelihood(pairs: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        for i, (context, continuation) in enumerate(pairs):
            context_ids, continuation_ids = encode_pair(loaded, context, continuation)
            if max_length is not None and len(context_ids) + len(continuation_ids) > max_length + 1:
                # lm-eval keeps the last max_length + 1 tokens (the last one is only a target)
                context_ids = context_ids[max(0, len(context_ids) + len(continuation_ids) - max_length - 1):]
            groups.setdefault(tuple(context_ids), []).append((i, continuation_ids))
        ordered = list(groups.items())
        scored = scorer.score_with_greedy([(list(ctx), [ids for _, ids in members]) for ctx, members in ordered])
        results: list[tuple[float, bool]] = [(0.0, True)] * len(pairs)
        for (_, members), group_scores in zip(ordered, scored, strict=True):
            for (i, _), score in zip(members, group_scores, strict=True):
                results[i] = score
        return results

    return loglikelihood
