"""ZeroEval's zero-shot GSM8K protocol (WildEval/ZeroEval), the one the PAD authors report GSM8K with.

ZeroEval asks one user turn (the model's own chat template, no system prompt, greedy, up to 4096 new tokens)
with its open-ended QA template (`src/templates/OEQA.py`, `OEQA`): reason, then answer in a JSON object.
Scoring (`src/evaluation/math_eval.py`, `eval_model`, with `eval_utils.py`):
  1. the answer is the "answer" field of the first complete {...} in the output (newlines removed, then
     parsed as JSON; a first complete object that is not valid JSON gives nothing, no later one is tried);
  2. else ZeroEval's regex fall-backs for `"answer": "..."` (quoted, then quoted across lines, then unquoted,
     then with an unquoted key);
  3. nothing found: "no answer", counted wrong;
  4. both the answer (as `str()` of the JSON value) and the reference (the text after "####") are
     sanitised (drop "$" and ",", a fraction "a/b" becomes its float) and the FIRST number of each,
     `-?\\d+(\\.\\d+)?`, is compared as floats.
Re-implemented here from that description (the protocol, not ZeroEval's code). Two deliberate differences,
neither of which changes a score ZeroEval's own runs can produce: a fraction is evaluated by a small
arithmetic-only evaluator instead of Python's `eval` (model output is never executed), and ZeroEval's
Llama-3.1-only `\\boxed{}` fall-back (keyed on the model's name) is left out.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from typing import Any

SOURCE = "WildEval/ZeroEval (src/templates/OEQA.py, src/evaluation/math_eval.py)"
MAX_NEW_TOKENS = 4096  # zero_eval_local.sh: MAX_TOKENS=4096
# The OEQA template, byte for byte (its trailing spaces included).
OEQA_TEMPLATE = (
    "\n## Question: \n\n{question}\n\n\n## Instruction \n\n"
    "Please answer this question by first reasoning and then providing your answer.\n"
    "Present your reasoning and solution in the following json format. \n"
    "Please show your final answer in the `answer` field, e.g.,`\"answer\": \"42\"`.\n\n"
    "```json\n{\n    \"reasoning\": \"___\",\n    \"answer\": \"___\"\n}\n```\n"
)
_FIRST_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def zeroeval_prompt(question: str) -> str:
    # str.replace, not str.format: the template's JSON braces are literal
    return OEQA_TEMPLATE.replace("{question}", question)


def reference_answer(gsm8k_answer: str) -> str:
    """The final answer of a GSM8K solution ("... #### 18" -> "18"), as ZeroEval's data keeps it."""
    return gsm8k_answer.split("####")[-1].replace("#", "").strip()


def first_complete_json(text: str) -> Any:
    """The first balanced {...} of `text` parsed as JSON with its newlines removed; None if it does not parse."""
    depth, start = 0, None
    for i, char in enumerate(text):
        if char == "{":
            if depth == 0:
                start = i
            depth += 1
        elif char == "}" and depth > 0:
            depth -= 1
            if depth == 0 and start is not None:
                try:
                    return json.loads(text[start : i + 1].replace("\n", ""))
                except json.JSONDecodeError:
                    return None
    return None


def json_field_by_regex(text: str, key: str) -> str | None:
    """ZeroEval's fall-backs for a field of malformed JSON, in its order (first match wins)."""
    quoted = re.search(f'"{key}"\\s*:\\s*"([^"]*?)"', text) or re.search(f'"{key}"\\s*:\\s*"(.*?)"', text, re.DOTALL)
    if quoted:
        return quoted.group(1)
    unquoted = re.search(f'"{key}"\\s*:\\s*([^,\\s]*)', text) or re.search(f'{key}\\s*:\\s*([^,\\s]*)', text)
    return unquoted.group(1) if unquoted else None


def extract_answer(output: str) -> str | None:
    """The model's answer as ZeroEval reads it (`str()` of the JSON value), or None: no answer."""
    parsed = first_complete_json(output)
    if isinstance(parsed, dict) and "answer" in parsed:
        return str(parsed["answer"])
    return json_field_by_regex(output, "answer")


_OPERATORS: dict[type, Any] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.USub: operator.neg, ast.UAdd: operator.pos,
}


def _arithmetic(node: ast.AST) -> float:
    """Value of a numeric expression; ValueError for anything that is not plain arithmetic on numbers."""
    if isinstance(node, ast.Expression):
        return _arithmetic(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return float(_OPERATORS[type(node.op)](_arithmetic(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _arithmetic(node.left), _arithmetic(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:  # no huge powers from model output
            raise ValueError("exponent too large")
        return float(_OPERATORS[type(node.op)](left, right))
    raise ValueError(f"not arithmetic: {type(node).__name__}")


def sanitize(answer: str) -> str:
    """ZeroEval's `sanitize_math_answers`: no "$", no ",", a fraction (any "/" expression) as its float."""
    answer = answer.replace("$", "").strip().replace(",", "")
    if "/" in answer:
        try:
            # eval() skips leading spaces and tabs (", 1/2" -> " 1/2"); ast.parse would call them an indent
            answer = str(_arithmetic(ast.parse(answer.lstrip(" \t"), mode="eval")))
        except (SyntaxError, ValueError, ArithmeticError, TypeError):
            pass  # ZeroEval keeps the text when eval fails
    return answer


def is_correct(model_answer: str, reference: str) -> bool:
    """First numbers of both sanitised answers equal as floats (no number in either: wrong)."""
    mine, gold = _FIRST_NUMBER.search(sanitize(model_answer)), _FIRST_NUMBER.search(sanitize(reference))
    return bool(mine and gold and float(mine.group()) == float(gold.group()))
