"""MCQ preference (PAD's teacher judgement): the teacher, as a user turn in its own chat context, is shown
a request and two responses A and B and asked which is better; the preference is read from its next-token
probabilities. `pref[i][j]` is what the judge gives response i against j, and a response's score is
m_i = mean over j != i of pref[i][j] (`PromptGroup.mcq_win_prob`). Two rules (`signals.mcq`):

- `released` (default), as the released code does it (EganGu/PAD `data_gen/gen/prob.py`): its prompt
  (`MCQ_TEMPLATES["released"]`, which also offers the answer "None"), each unordered pair asked ONCE with
  the lower index shown as A; P(A) is the RAW probability summed over the tokens among the teacher's top 20
  whose text contains the letter and is shorter than 3 characters (" A", "A)", ...), plus 1e-8; no
  renormalisation, so mass on "None" or anything else is lost and m_i can all lie below (or above) 0.5.
  Each response is cut as the release cuts it: at 2,500 of the judge's tokens, decoded, "..." appended
  (`released_mcq_response`). An MCQ prompt still longer than the judge's context is refused
  (`check_mcq_context`; `validate` warns from the configured lengths, harness.preflight).
- `debiased`: each pair asked in both orders with this project's prompt (`MCQ_TEMPLATES["default"]`), P(A)
  renormalised over the two letter tokens, P(i beats j) = (P(A | i first) + P(B | i second)) / 2: a
  position bias cancels and pref + pref.T = 1. Then sum_i m_i = n/2 exactly, so PAD's filter (some
  m_i > 0.5 and some <= 0.5) drops a prompt only when every m_i is exactly 0.5: it filters nothing.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.errors import ConfigError, ModelSourceError
from harness.models.base import LoadedModel
from harness.models.scoring import Scorer
from harness.signals.common import SignalResult, group_field

MCQ_TEMPLATES = {
    # The released prompt (mcq-template.json), system text folded into the user turn as the release does
    # for chat templates without a system role (Gemma-2), candidates formatted as its generate_options.
    "released": (
        "You are a helpful assistant, that evaluates the following responses to the given query and choose "
        "the best one based on relevance, accuracy, completeness, coherence, and clarity.\nOutput only the "
        "identifier of the best response (A, or B). If none of the responses meet these criteria, or if the "
        "responses are too similar to distinguish, Output \"None\".\n\n"
        "### Query\n{question}\n\n"
        "### Candidate Responses\n"
        'A) """\n{response_a}\n"""\n'
        'B) """\n{response_b}\n"""\n\n'
        "### Output\nThe identifier of the best response:"
    ),
    "default": (
        "Which of the two responses below answers the user's request better? Judge helpfulness, "
        "correctness, relevance and clarity; ignore the order in which they are shown.\n\n"
        "### Request\n{question}\n\n"
        "### Response A\n{response_a}\n\n"
        "### Response B\n{response_b}\n\n"
        "Answer with a single letter, A or B."
    ),
}
MCQ_OPTIONS = ("A", "B")
MCQ_RULES = ("released", "debiased")
RELEASED_TOP_LOGPROBS = 20  # the release reads vLLM's top-20 next-token log-probs
RELEASED_EPSILON = 1e-8
RELEASED_MCQ_RESPONSE_TOKENS = 2500  # prob.py: generate_options(..., 2500, tokenizer) cuts each response


def mcq_question(messages: list[dict[str, str]]) -> str:
    """The request as shown to the judge: the last user turn, earlier turns quoted before it."""
    turns = [m for m in messages if m["role"] != "system"]
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in turns)


def mcq_template(name_or_text: str) -> str:
    if name_or_text in MCQ_TEMPLATES:
        return MCQ_TEMPLATES[name_or_text]
    if all(k in name_or_text for k in ("{question}", "{response_a}", "{response_b}")):
        return name_or_text
    raise ConfigError(
        f"signals.mcq_template: {name_or_text[:40]!r} is neither a known template "
        f"({', '.join(MCQ_TEMPLATES)}) nor a text with {{question}}, {{response_a}} and {{response_b}}"
    )


def mcq_option_ids(model: LoadedModel) -> list[int]:
    ids = []
    for letter in MCQ_OPTIONS:
        tok = model.tokenizer(letter, add_special_tokens=False)["input_ids"]
        if len(tok) != 1:
            raise ModelSourceError(f"the judge's tokenizer splits the option letter {letter!r} into {tok}")
        ids.append(int(tok[0]))
    return ids


def released_option_ids(model: LoadedModel) -> list[list[int]]:
    """Per option letter, every token id whose text contains the letter and is shorter than 3 characters
    (the release's `stat_prob` match: "A", " A", "A)", "A." ...; case-sensitive)."""
    tok = model.tokenizer
    texts = tok.batch_decode([[i] for i in range(len(tok))])
    return [[i for i, text in enumerate(texts) if letter in text and len(text) < 3] for letter in MCQ_OPTIONS]


def released_mcq_response(text: str, tokenizer: Any, max_tokens: int = RELEASED_MCQ_RESPONSE_TOKENS) -> str:
    """The release's `truncate_and_add_ellipsis` (prob.py), with the judge's tokenizer: a response longer
    than `max_tokens` tokens (no special tokens) is cut to them, decoded, and "..." appended."""
    tokens = tokenizer.encode(text, add_special_tokens=False)
    if len(tokens) > max_tokens:
        return str(tokenizer.decode(tokens[:max_tokens])) + "..."
    return text


def mcq_prompts(model: LoadedModel, group: Any, template: str = "default", both_orders: bool = True,
                response_tokens: int | None = None) -> list[tuple[int, int, list[int]]]:
    """(first, second, prompt_ids) for every ordered pair of distinct responses (`both_orders`), or for
    each unordered pair once with the lower index first (the released rule). `response_tokens`: each
    response cut as the release cuts it (`released_mcq_response`)."""
    text = mcq_template(template)
    question = mcq_question(group_field(group, "messages"))
    responses = group_field(group, "responses")
    if response_tokens is not None:
        responses = [released_mcq_response(r, model.tokenizer, response_tokens) for r in responses]
    out = []
    for i in range(len(responses)):
        for j in range(len(responses)):
            if i != j and (both_orders or i < j):
                user = text.format(question=question, response_a=responses[i], response_b=responses[j])
                out.append((i, j, model.formatter.prompt_ids([{"role": "user", "content": user}])))
    return out


def model_context(model: LoadedModel) -> int | None:
    """The loaded model's context in tokens, from its config (None when it does not say)."""
    config = getattr(model.model, "config", None)
    config = getattr(config, "text_config", None) or config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def check_mcq_context(judge: LoadedModel, groups: list[Any], asks: list[list[tuple[int, int, list[int]]]]) -> None:
    """Refuse (one line) an MCQ prompt longer than the judge's context, which would be scored past the
    positions the model was trained on (vLLM refuses such a prompt; an HF forward does not)."""
    context = model_context(judge)
    if context is None:
        return
    for group, group_asks in zip(groups, asks, strict=True):
        longest = max((len(p) for _, _, p in group_asks), default=0)
        if longest > context:
            prompt_id = group.get("prompt_id") if isinstance(group, dict) else getattr(group, "prompt_id", None)
            raise ConfigError(
                f"signals.mcq: the MCQ prompt of prompt {prompt_id!r} has {longest} tokens but the "
                f"teacher ({judge.identity.get('model', '?')}) has a context of {context}; lower "
                f"sampling.max_new_tokens or prompts.max_prompt_chars (the released rule cuts each response at "
                f"{RELEASED_MCQ_RESPONSE_TOKENS} tokens, the debiased one does not cut)")


def mcq_preference(
    teacher: LoadedModel, groups: list[Any], batch_size: int = 8, template: str | None = None,
    progress: str | None = "MCQ preferences", rule: str = "released",
) -> SignalResult:
    """[P][n][n] pref[i][j]: what the teacher gives response i against response j (module docstring).
    `template` None: the rule's own prompt."""
    if rule not in MCQ_RULES:
        raise ConfigError(f"signals.mcq: {rule!r} is not a known rule ({', '.join(MCQ_RULES)})")
    if rule == "released":
        return _released_mcq(teacher, groups, batch_size, template or "released", progress)
    scorer = Scorer(teacher, batch_size=batch_size)
    options = mcq_option_ids(teacher)
    asks = [mcq_prompts(teacher, group, template or "default") for group in groups]
    check_mcq_context(teacher, groups, asks)
    # The n(n-1) prompts of a group share the judge's context and the question: encoded once per group.
    logps = scorer.shared_next_token_logprobs([[p for _, _, p in a] for a in asks], options, progress)
    values = []
    for group, group_asks, logp in zip(groups, asks, logps, strict=True):
        n = len(group_field(group, "responses"))
        p_first = torch.softmax(logp.double(), dim=-1)[:, 0].tolist()  # P(option A), renormalised over A/B
        shown_first = {(i, j): p for (i, j, _), p in zip(group_asks, p_first, strict=True)}
        pref = [[0.5] * n for _ in range(n)]
        for i in range(n):
            for j in range(i + 1, n):
                # i shown first: P(A); i shown second: P(B) = 1 - P(A) of the (j, i) prompt.
                p_ij = 0.5 * (shown_first[(i, j)] + (1.0 - shown_first[(j, i)]))
                pref[i][j], pref[j][i] = p_ij, 1.0 - p_ij
        values.append(pref)
    return SignalResult(values, forward_tokens=scorer.forward_tokens)


def _released_mcq(teacher: LoadedModel, groups: list[Any], batch_size: int, template: str,
                  progress: str | None) -> SignalResult:
    """The released rule: one prompt per unordered pair, raw top-20 letter probabilities (docstring)."""
    scorer = Scorer(teacher, batch_size=batch_size)
    letters = released_option_ids(teacher)
    if not all(letters):
        raise ModelSourceError("the judge's tokenizer has no token containing the option letter A or B")
    candidates = letters[0] + letters[1]
    asks = [mcq_prompts(teacher, group, template, both_orders=False, response_tokens=RELEASED_MCQ_RESPONSE_TOKENS)
            for group in groups]
    check_mcq_context(teacher, groups, asks)
    logps = scorer.shared_next_token_logprobs([[p for _, _, p in a] for a in asks], candidates, progress,
                                              within_top=RELEASED_TOP_LOGPROBS)
    values = []
    for group, group_asks, logp in zip(groups, asks, logps, strict=True):
        n = len(group_field(group, "responses"))
        probs = logp.double().exp()  # tokens outside the top 20 come back as -inf: probability 0
        p_a = (probs[:, : len(letters[0])].sum(-1) + RELEASED_EPSILON).tolist()
        p_b = (probs[:, len(letters[0]):].sum(-1) + RELEASED_EPSILON).tolist()
        pref = [[0.5] * n for _ in range(n)]
        for (i, j, _), a, b in zip(group_asks, p_a, p_b, strict=True):
            pref[i][j], pref[j][i] = a, b  # i was shown as A, j as B
        values.append(pref)
    return SignalResult(values, forward_tokens=scorer.forward_tokens)
