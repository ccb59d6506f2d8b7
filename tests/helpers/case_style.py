"""Tiny models with a teacher preference a student can learn: the CASE of letters.

Random-init tiny models give no learnable teacher preference (measured for tests/test_learning_sanity.py: a
teacher that differs from the student by its seed, or by a system prompt, ranks held-out samples by noise no
method learns from a few prompts; every method moved AWAY from it on held-out prompts). A system prompt that
switches a style is not learnable reliably by a tiny llama either (it learned the switch for 3 of 8 seeds). So
both models are trained here, in ~9 s, from one random init:

- the STUDENT answers with letters drawn by their English frequencies; 40% of its answers lean lowercase (85%
  of their letters), the others uppercase (10% lowercase). Its greedy answer is uppercase ("EEEE...").
- the TEACHER is the student trained further to write lowercase letters after any start of an answer in the
  student's style (that start is context, not trained on): it prefers lowercase whatever came before.

So the teacher's preference over the student's samples is their lowercase letters, a preference every method
can learn from a few prompts and that shows on held-out prompts: the teacher's pick among 8 samples almost
always leans lowercase (SFT learns from it), pairs and rankings separate by case (DPO family, PAD), and the
teacher's own samples and next-token distributions are lowercase (SeqKD, KD, GKD). Everything else the two
models share. Answers are 24-48 letters, so samples of 16 tokens are all cut there (none ends by itself).
Measured on seeds 0-4: the student's first-token lowercase probability 0.40, the teacher's 0.997 after any
prefix (all-uppercase, mixed or lowercase).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

LOWERCASE_ANSWERS = 0.4  # the share of the student's answers that lean lowercase
LEANS = (0.85, 0.1)  # the lowercase share of a lowercase-leaning and of an uppercase-leaning answer
LETTER_FREQUENCY = {  # English letter frequencies (percent)
    "e": 12.7, "t": 9.1, "a": 8.2, "o": 7.5, "i": 7.0, "n": 6.7, "s": 6.3, "h": 6.1, "r": 6.0, "d": 4.3, "l": 4.0,
    "c": 2.8, "u": 2.8, "m": 2.4, "w": 2.4, "f": 2.2, "g": 2.0, "y": 2.0, "p": 1.9, "b": 1.5, "v": 1.0, "k": 0.8,
    "j": 0.2, "x": 0.2, "q": 0.1, "z": 0.1,
}
_WORDS = ("apple river stone cloud music garden window paper light forest ocean letter bread engine story "
          "mountain candle bridge winter market").split()


def prompt_texts(count: int, seed: int) -> list[str]:
    """`count` distinct short requests."""
    rng = random.Random(seed)
    return [f"Question {i}: tell me about the {rng.choice(_WORDS)} and the {rng.choice(_WORDS)}." for i in range(count)]


def write_prompts(path: Path, count: int, seed: int = 0) -> Path:
    """A `prompts.source: jsonl:<path>` file of `count` requests (field `prompt`)."""
    path.write_text("".join(json.dumps({"prompt": text}) + "\n" for text in prompt_texts(count, seed)))
    return path


def answer(rng: random.Random, lowercase_share: float, length: int) -> str:
    """`length` letters by English frequency, each lowercase with probability `lowercase_share`."""
    letters = rng.choices(list(LETTER_FREQUENCY), weights=list(LETTER_FREQUENCY.values()), k=length)
    return "".join(c if rng.random() < lowercase_share else c.upper() for c in letters)


def student_answer(rng: random.Random, length: int) -> str:
    """The student's style: a lowercase-leaning answer (most letters lowercase) with probability
    `LOWERCASE_ANSWERS`, else an uppercase-leaning one; letters independent given the answer's lean."""
    lean = LEANS[0] if rng.random() < LOWERCASE_ANSWERS else LEANS[1]
    return answer(rng, lean, length)


def _fit(model: Any, tok: Any, rng: random.Random, steps: int, teacher: bool, lr: float, batch: int = 16) -> None:
    """`steps` AdamW steps of NLL on (request, answer) conversations, the answers' tokens only. The student
    learns `student_answer`s; the teacher, after a prefix of 0-16 letters in the student's style that it is
    not trained on, lowercase letters only, so that it prefers lowercase whatever came before."""
    requests = prompt_texts(256, seed=rng.randrange(2**31))
    end = tok.convert_tokens_to_ids("<|im_end|>")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        rows = []
        for _ in range(batch):
            prompt = list(tok.apply_chat_template([{"role": "user", "content": rng.choice(requests)}],
                                                  add_generation_prompt=True, tokenize=True, return_dict=False))
            length = rng.randint(24, 48)
            context = student_answer(rng, rng.randint(0, 16)) if teacher else ""
            text = answer(rng, 1.0, length - len(context)) if teacher else student_answer(rng, length)
            rows.append((prompt + tok.encode(context, add_special_tokens=False) if context else prompt,
                         tok.encode(text, add_special_tokens=False) + [end]))
        width = max(len(p) + len(r) for p, r in rows)
        ids = torch.full((batch, width), tok.pad_token_id)
        attention = torch.zeros((batch, width), dtype=torch.long)
        targets = torch.zeros((batch, width))
        for i, (p, r) in enumerate(rows):
            ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            attention[i, : len(p) + len(r)] = 1
            targets[i, len(p) : len(p) + len(r)] = 1.0
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        loss = -(logp * targets[:, 1:]).sum() / targets[:, 1:].sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def train_student_and_teacher(root: Path, seed: int = 0, student_steps: int = 200, teacher_steps: int = 100,
                              lr: float = 1e-2) -> tuple[Path, Path]:
    """(student dir, teacher dir): `tiny:llama` (seed `seed`) trained on mixed-case answers, saved with its
    tokenizer as a model directory; then trained on lowercase answers and saved as the teacher."""
    from harness.models.tiny import build_tiny_model

    model, tok = build_tiny_model("llama", seed=seed)
    rng = random.Random(seed + 1)
    out = []
    for name, steps in (("student", student_steps), ("teacher", teacher_steps)):
        _fit(model, tok, rng, steps, name == "teacher", lr)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out.append(root / name)
    return out[0], out[1]
