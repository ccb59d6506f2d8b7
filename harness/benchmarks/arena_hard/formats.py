"""Arena-Hard judge formats: the official system prompts, user template and verdict labels, and verdict parsing.

Re-implemented from lmarena/arena-hard-auto (not installable): the v0.1 `judge_config.yaml` and v2.0
`judge_utils.py` prompts, and each version's `get_score` regexes.
"""

from __future__ import annotations

import re

_CRITERIA = (
    "Then consider if the assistant's answers are helpful, relevant, and concise. Helpful means the answer "
    "correctly responds to the prompt or follows the instructions. Note when user prompt has any ambiguity or "
    "more than one interpretation, it is more helpful and appropriate to ask for clarifications or more "
    "information from the user than providing an answer based on assumptions. Relevant means all parts of the "
    "response closely connect or are appropriate to what is being asked. Concise means the response is clear "
    "and not verbose or excessive.\n\nThen consider the creativity and novelty of the assistant's answers when "
    "needed. Finally, identify any missing important information in the assistants' answers that would be "
    "beneficial to include when responding to the user prompt.\n\nAfter providing your explanation, you must "
    "output only one of the following choices as your final verdict with a label:\n\n1. Assistant A is "
    "significantly better: [[A>>B]]\n2. Assistant A is slightly better: [[A>B]]\n3. Tie, relatively the same: "
    "[[A=B]]\n4. Assistant B is slightly better: [[B>A]]\n5. Assistant B is significantly better: [[B>>A]]\n\n"
    "Example output: \"My final verdict is tie: [[A=B]]\"."
)
_INTRO = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user prompt displayed below. You will be given assistant A's answer and assistant B's answer. Your "
    "job is to evaluate which assistant's answer is better.\n\n"
)
# v0.1's judge_config.yaml system prompt; v2.0 reuses it for hard_prompt as OG_ARENA_HARD_PROMPT.
OG_ARENA_HARD_PROMPT = (
    _INTRO + "Begin your evaluation by generating your own answer to the prompt. You must provide your answers "
    "before judging any answers.\n\nWhen evaluating the assistants' answers, compare both assistants' answers "
    "with your answer. You must identify and correct any mistakes or inaccurate information.\n\n" + _CRITERIA
)
# v2.0 creative_writing: the judge does not write its own answer first.
CREATIVE_WRITING_PROMPT = (
    _INTRO + "When evaluating the assistants' answers, compare both assistants' answers. You must identify and "
    "correct any mistakes or inaccurate information.\n\n" + _CRITERIA
)
PROMPT_TEMPLATE = (
    "<|User Prompt|>\n{QUESTION}\n\n<|The Start of Assistant A's Answer|>\n{ANSWER_A}\n<|The End of Assistant "
    "A's Answer|>\n\n<|The Start of Assistant B's Answer|>\n{ANSWER_B}\n<|The End of Assistant B's Answer|>"
)
# v0.1 asks once more when no verdict label was found (gen_judgment's second attempt).
CONTINUE_PROMPT = "continue your judgment and finish by outputting a final verdict label"

JUDGE_SETTINGS: dict[str, dict[str, str]] = {
    "arena-hard-v0.1": {"baseline": "gpt-4-0314", "system_prompt": OG_ARENA_HARD_PROMPT},
    "hard_prompt": {"baseline": "o3-mini-2025-01-31", "system_prompt": OG_ARENA_HARD_PROMPT},
    "creative_writing": {"baseline": "gemini-2.0-flash-001", "system_prompt": CREATIVE_WRITING_PROMPT},
}
# arena-hard-auto: v0.1 is judged by gpt-4-1106-preview, v2.0 by gpt-4.1.
OFFICIAL_JUDGE = {"v0.1": "gpt-4-1106-preview", "v2.0": "gpt-4.1"}

# Not arena-hard-auto's protocol (`params.verdict_prefill`): start the judge's reply with the verdict.
VERDICT_PREFILL = "My final verdict is: [["  # the prompt's example output: "My final verdict is tie: [[A=B]]"

# ------------------------------------------------------------------------------------------------ verdicts
DOUBLE_BRACKET = re.compile(r"\[\[([AB<>=]+)\]\]")
SINGLE_BRACKET = re.compile(r"\[([AB<>=]+)\]")
V2_PATTERNS = (DOUBLE_BRACKET, SINGLE_BRACKET)

# v0.1: the five labels of the judge prompt; anything else gives the game weight 0.
# Values: (points for the model, strong?) when the MODEL is assistant B (game 1, baseline is A).
V01_LABELS = {"A>>B": (0.0, True), "A>B": (0.0, False), "A=B": (0.5, False), "B>A": (1.0, False),
              "B>>A": (1.0, True)}

# v2.0 `label_to_score` (score of assistant A before `1 - s` for game 1), including the reversed spellings.
V2_LABEL_TO_A_SCORE = {"A>B": (1.0, False), "A>>B": (1.0, True), "A=B": (0.5, False), "A<<B": (0.0, True),
                       "A<B": (0.0, False), "B>A": (0.0, False), "B>>A": (0.0, True), "B=A": (0.5, False),
                       "B<<A": (1.0, True), "B<A": (1.0, False)}


def extract_verdict_v01(judgment: str) -> tuple[str | None, bool]:
    """v0.1 `get_score`: (label, try_again). No label -> ask again; two different labels -> give up."""
    matches = [m for m in DOUBLE_BRACKET.findall(judgment) if m != ""]
    if len(set(matches)) == 0:
        return None, True
    if len(set(matches)) == 1:
        return matches[0].strip("\n"), False
    return None, False


def extract_verdict_v2(judgment: str) -> str | None:
    """v2.0 `get_score`: the LAST match of the first pattern that matches the upper-cased judgement."""
    text = judgment.upper()
    for pattern in V2_PATTERNS:
        matches = [m for m in pattern.findall(text) if m != ""]
        if matches:
            return str(matches[-1]).strip("\n")
    return None
