"""The shared-vocabulary check for methods that compare teacher and student token distributions."""

from __future__ import annotations

from typing import Any

from harness.errors import ConfigError


class VocabularyMismatchError(ConfigError):
    """Teacher and student do not share a vocabulary, so token-level distributions cannot be compared."""


def _describe(model: Any) -> str:
    ident = getattr(model, "identity", {}) or {}
    name = ident.get("model") or getattr(model.tokenizer, "name_or_path", "?")
    return f"{name} ({model.vocab_size} output tokens, tokenizer {getattr(model.tokenizer, 'name_or_path', '?')})"


def require_shared_vocab(method: str, teacher: Any, student: Any) -> None:
    """Raise `VocabularyMismatchError` unless both models have the same output size and token->id map.

    Both must hold: the same token ids must mean the same strings (tokenizer vocabularies equal), and the
    teacher's top-k ids must index the student's output layer (output sizes equal).
    """
    problems = []
    if teacher.vocab_size != student.vocab_size:
        problems.append(f"output vocabulary sizes differ ({teacher.vocab_size} vs {student.vocab_size})")
    if teacher.tokenizer.get_vocab() != student.tokenizer.get_vocab():
        problems.append("their tokenizers map tokens to different ids")
    if problems:
        raise VocabularyMismatchError(
            f"method {method!r} distils token-level distributions, so the teacher and the student must share "
            f"one vocabulary, but {' and '.join(problems)}: teacher {_describe(teacher)}, student "
            f"{_describe(student)}. Use a student from the teacher's model family (same tokenizer), or drop "
            f"{method!r} and use a sequence-level method (sft, seqkd, dpo, simpo, dpkd, plad, pad)."
        )
