"""The initial student's log-probs as the trainer computes them at step 0: DPO's reference.

DPO's loss reads h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)], with pi_ref cached
once (`Signal.REFERENCE_LOGPROB`). At step 0 the policy IS the reference, so h must be 0 and the sigmoid
loss log 2. The trainer runs the student on fp32 master weights under autocast (`mixed_precision`,
harness.training.precision), while a bf16 student as loaded runs everything in bf16 (residual stream,
norms, softmax): scored that way the reference is off by the difference of the two precision paths, a
bias the policy then "learns" at every step. So the student is scored here:
  - in the trainer's precision path (`PolicyPrecision`: its weights dtype and autocast, for this launch);
  - through the trainer's own code: the packers (`pack_groups` where the model shares prompt encodings,
    else `pack_sequences`) and `sequence_logprobs`, so a (prompt, responses) row laid out as a training
    micro-batch lays it out gets the training step's very numbers.
What stays: under autocast a different batch layout (a pair of responses in training, all n of a prompt
here; padding to another width) can round a few logits differently, so h at step 0 is ~1e-5 instead of
exactly 0 unless the layouts coincide (docs/fidelity.md).
"""

from __future__ import annotations

from typing import Any

import torch

from harness.methods.common import pack_sequences
from harness.methods.shared_prompt import pack_groups, shares_prompts
from harness.models.base import LoadedModel
from harness.models.scoring import group_chunks
from harness.training.precision import PolicyPrecision, in_policy_precision

_NO_CUT = 1 << 40  # the ids come already cut to the budget (`scoring_inputs`); the packers cut nothing more


def policy_sequence_scores(model: LoadedModel, groups: list[Any], precision: PolicyPrecision, batch_size: int = 8,
                           max_length: int | None = None, max_prompt_length: int | None = None,
                           progress: str | None = "student log-probs", truncation: str = "per_response") -> Any:
    """Mean and SUM log-probs of every response under `model` run as the trainer runs it (module docstring);
    a `harness.signals.logprobs.SequenceScores`."""
    from harness.signals.logprobs import SequenceScores, scoring_inputs

    tokens = scoring_inputs(model, groups, max_length, max_prompt_length, truncation)  # type: ignore[arg-type]
    share = shares_prompts(model.model)
    pad_id = model.formatter.pad_id
    sums: list[list[float]] = []
    means: list[list[float]] = []
    counts: list[list[int]] = []
    forward = 0
    bar = None
    if progress:
        from harness.console import bar as progress_bar

        bar = progress_bar(total=len(tokens), desc=progress, unit="prompt")
    with torch.no_grad(), in_policy_precision(model.model, precision):
        for chunk in group_chunks(tokens, batch_size):
            prompts = [tokens[g][0] for g in chunk]
            responses = [tokens[g][1] for g in chunk]
            if share:
                packed: Any = pack_groups(prompts, responses, pad_id, _NO_CUT, _NO_CUT)
            else:
                packed = pack_sequences([p for p, rs in zip(prompts, responses, strict=True) for _ in rs],
                                        [r for rs in responses for r in rs], pad_id, _NO_CUT, _NO_CUT)
            forward += packed.num_tokens
            total, mean, count = packed.to(model.device).sequence_logprobs(model.model)
            total_l, mean_l, count_l = total.tolist(), mean.tolist(), count.long().tolist()
            for rs in responses:
                n = len(rs)
                sums.append(total_l[:n])
                means.append(mean_l[:n])
                counts.append(count_l[:n])
                total_l, mean_l, count_l = total_l[n:], mean_l[n:], count_l[n:]
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return SequenceScores(mean=means, sum=sums, n_tokens=counts, forward_tokens=forward)
