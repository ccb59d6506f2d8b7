"""The shared signals: teacher/student scores that methods ask for, each a pure function of (model, data).

Every signal function takes prompt groups (`PromptGroup`s or dicts with "messages" and "responses", plus
"prompt_id" for teacher samples) and a `LoadedModel`, and returns a `SignalResult`: the per-group values in
the layouts documented on `harness.methods.base.PromptGroup`, plus the tokens the model processed
(`forward_tokens`) or generated (`generated_tokens`) so the pipeline can charge the work to every method
that uses the signal. The log-prob signals come from `sequence_scores` instead (a `SequenceScores`: mean
and SUM log-probs from one pass; the teacher's mean, the initial student's mean and SUM, DPO's reference).
The pipeline caches each result once and shares it.

A model sees its OWN context: prompts are built with `model.formatter`, so a teacher with a system prompt
and demonstrations scores and judges with them (context distillation), the student without. Responses are
tokenized with `formatter.response_ids` (end-of-turn included), the training convention.

The functions live in modules with one job each (`logprobs`, `mcq`, `topk`, `teacher_generation`); this
package re-exports them. To replace one in a test, patch it where it is looked up: the module that defines
it (e.g. `harness.signals.mcq.mcq_preference`), which is where `harness.signals.builtin` imports it from.
"""

from harness.signals.common import SignalResult
from harness.signals.logprobs import SequenceScores, scoring_inputs, sequence_scores
from harness.signals.mcq import (
    MCQ_OPTIONS,
    MCQ_RULES,
    MCQ_TEMPLATES,
    RELEASED_EPSILON,
    RELEASED_MCQ_RESPONSE_TOKENS,
    RELEASED_TOP_LOGPROBS,
    check_mcq_context,
    mcq_option_ids,
    mcq_preference,
    mcq_prompts,
    mcq_question,
    mcq_template,
    model_context,
    released_mcq_response,
    released_option_ids,
)
from harness.signals.teacher_generation import teacher_samples
from harness.signals.topk import load_topk, save_topk, teacher_topk

__all__ = [
    "MCQ_OPTIONS", "MCQ_RULES", "MCQ_TEMPLATES", "RELEASED_EPSILON", "RELEASED_MCQ_RESPONSE_TOKENS",
    "RELEASED_TOP_LOGPROBS", "SequenceScores", "SignalResult", "check_mcq_context", "load_topk",
    "mcq_option_ids", "mcq_preference", "mcq_prompts", "mcq_question", "mcq_template", "model_context",
    "released_mcq_response", "released_option_ids", "save_topk", "scoring_inputs", "sequence_scores",
    "teacher_samples", "teacher_topk",
]
