"""Token lengths the estimate assumes: prompts, responses, benchmark items, from what is at hand offline.

- Prompts: a local prompt source (the `sharegpt` package, `jsonl:`) is read, as `pad-harness validate`
  does, and each prompt is formatted with the model's own chat template and context (system prompt,
  demonstrations) and counted with its tokenizer when that is at hand offline (tiny models, the SmolLM2
  alias, local directories, the Hugging Face cache); else its characters / CHARS_PER_TOKEN plus
  TEMPLATE_TOKENS_PER_TURN per turn. A hub prompt set (`hf:`) is not downloaded for an estimate: its
  questions are taken as ASSUMED_PROMPT_TOKENS each.
- Responses (samples, answers, on-policy samples): min(the cap that applies, ASSUMED_RESPONSE_TOKENS). The
  offline presets' caps (12-64 tokens) are far below it, and their samples do run to the cap (measured: 1906
  of 1920 possible tokens in the offline default); a real model stops earlier than 2048-4096 caps.
- Benchmark items: the benchmark's data when it loads (as `validate` loads it), else `subset` or the
  official size in OFFICIAL_ITEMS.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from harness.errors import HarnessError

# Typical length of an instruction-tuned model's answer. Source: alpaca_eval 0.6.6's AlpacaEval 2 leaderboard
# (its `avg_length` is characters): gemma-2-9b-it-SimPO 1833, gemma-2-9b-it-DPO 2016 characters; gemma-2-9b-it
# 1567 (ZIYU-DEEP/eva benchmark/alpaca_eval/README.md); at ~4 characters per token, about 450 tokens.
ASSUMED_RESPONSE_TOKENS = 450
# A hub prompt set's question when it is not read (UltraFeedback here): an assumption, not a measurement.
ASSUMED_PROMPT_TOKENS = 150
CHARS_PER_TOKEN = 4.0  # English text under a 32k-256k vocabulary, when the tokenizer is not at hand
TEMPLATE_TOKENS_PER_TURN = 6  # role markers around each turn, when the tokenizer is not at hand
# Official sizes, used when a benchmark's data does not load here and no subset is given.
OFFICIAL_ITEMS = {"alpaca_eval2": 805, "mt_bench": 80, "gsm8k": 1319, "ifeval": 541,
                  "arena_hard:v0.1": 500, "arena_hard:v2.0": 750}
DEFAULT_HELD_OUT = 32  # teacher_agreement without a subset (harness/benchmarks/teacher_agreement.py)

Messages = list[dict[str, str]]


class Tokens:
    """Counts tokens as one model sees them: its tokenizer and chat template when at hand, else characters."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.formatter = _formatter(spec)

    @property
    def exact(self) -> bool:
        return self.formatter is not None

    def text(self, text: str) -> float:
        if self.formatter is not None:
            return float(len(self.formatter.tokenizer(text, add_special_tokens=False)["input_ids"]))
        return len(text) / CHARS_PER_TOKEN

    def prompt(self, messages: Messages) -> float:
        """The prompt as the model is asked it: its context, the conversation and the chat template."""
        if self.formatter is not None:
            return float(len(self.formatter.prompt_ids(messages)))
        turns = [*_context_messages(self.spec), *messages]
        return sum(self.text(m["content"]) + TEMPLATE_TOKENS_PER_TURN for m in turns) + TEMPLATE_TOKENS_PER_TURN

    @cached_property
    def turn_end(self) -> int:
        """Tokens that end a finished response in training and scoring: the template's turn suffix
        (ChatML and Gemma-2: end-of-turn + newline, 2; Llama-3: 1), else 1."""
        return len(self.formatter.turn_suffix_ids) if self.formatter is not None else 1

    @cached_property
    def shared_prefix(self) -> float:
        """Tokens every prompt of this model starts with (chat template scaffold, system prompt,
        demonstrations): a scorer encodes them once per batch (harness.models.kv.encode_shared_prefix)."""
        if self.formatter is None:
            return sum(self.text(m["content"]) + TEMPLATE_TOKENS_PER_TURN for m in _context_messages(self.spec))
        first = self.formatter.prompt_ids([{"role": "user", "content": "Why?"}])
        second = self.formatter.prompt_ids([{"role": "user", "content": "Name three colours."}])
        common = 0
        while common < min(len(first), len(second)) and first[common] == second[common]:
            common += 1
        return float(common)

    @cached_property
    def chars_per_token(self) -> float:
        """Characters per token of English text under this tokenizer (for texts known only by length)."""
        if self.formatter is None:
            return CHARS_PER_TOKEN
        from harness.signals import MCQ_TEMPLATES

        sample = MCQ_TEMPLATES["released"]  # 600 characters of plain English instructions
        return len(sample) / max(self.text(sample), 1.0)

    def question(self, tokens: float) -> float:
        """A prompt whose question is `tokens` long (the template and context around it added)."""
        return self.prompt([{"role": "user", "content": ""}]) + tokens


def _reference(item: dict[str, Any]) -> str:
    """The answer a judge compares with (AlpacaEval's reference output, Arena-Hard's baseline answer,
    MT-Bench's reference turns), '' when the item has none."""
    ref = item.get("reference_output") or item.get("baseline_answer") or item.get("reference_turns") or ""
    return " ".join(map(str, ref)) if isinstance(ref, list | tuple) else str(ref)


def _context_messages(spec: Any) -> Messages:
    msgs = [{"role": "system", "content": spec.system_prompt}] if getattr(spec, "system_prompt", None) else []
    for demo in getattr(spec, "demonstrations", ()):
        msgs += [{"role": "user", "content": demo.user}, {"role": "assistant", "content": demo.assistant}]
    return msgs


def _formatter(spec: Any) -> Any:
    """The model's ChatFormatter when its tokenizer is on disk (never downloads weights), else None."""
    from harness.models import sources
    from harness.models.chat import ChatFormatter

    try:
        tokenizer = sources._load_tokenizer(spec.tokenizer or spec.model, spec.revision)
        return ChatFormatter.for_spec(tokenizer, spec)
    except (HarnessError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class BenchItems:
    items: int
    turns: int
    prompt_chars: float | None  # mean characters of an item's conversation (first turn); None: unknown
    conversations: list[Messages] | None  # the greedy conversations when known (exact prompt counts)
    source: str
    reference_chars: float | None = None  # mean characters of the reference/baseline answer a judge reads


class Lengths:
    """Per experiment: prompt and response lengths, and what each benchmark asks (module docstring)."""

    def __init__(self, exp: Any) -> None:
        self.exp = exp
        self.student = Tokens(exp.student)
        self.teacher = Tokens(exp.teacher)
        self._items: dict[int, BenchItems] = {}
        self._names: dict[int, str] = {}
        self._item_prompts: dict[tuple[int, int], float] = {}

    @cached_property
    def prompts(self) -> list[Messages] | None:
        if self.exp.prompts.source.startswith("hf:"):
            return None
        from harness.prompts import load_prompts

        try:
            return [p["messages"] for p in load_prompts(self.exp.prompts).prompts[: self.exp.prompts.count]]
        except HarnessError:
            return None

    def prompt_tokens(self, who: str) -> float:
        """Mean prompt tokens of the training prompts as `who` ("student" or "teacher") is asked them."""
        tokens = self.teacher if who == "teacher" else self.student
        if self.prompts:
            return statistics.fmean(tokens.prompt(m) for m in self.prompts)
        return tokens.question(ASSUMED_PROMPT_TOKENS)

    def longest_prompt_tokens(self, who: str) -> float | None:
        """The longest training prompt as `who` is asked it (None when the prompts are not read: a hub set)."""
        tokens = self.teacher if who == "teacher" else self.student
        return max(tokens.prompt(m) for m in self.prompts) if self.prompts else None

    def describe_prompts(self) -> str:
        how = "tokenizers at hand" if self.student.exact and self.teacher.exact else f"{CHARS_PER_TOKEN:g} chars/token"
        if self.prompts:
            return f"prompts: the {len(self.prompts)} prompts of the source, counted with {how}"
        return (f"prompts: {self.exp.prompts.source} not read for an estimate; each question assumed "
                f"{ASSUMED_PROMPT_TOKENS} tokens ({how} for the template and context)")

    @staticmethod
    def response(cap: int) -> float:
        return float(min(cap, ASSUMED_RESPONSE_TOKENS))

    def bench_items(self, bench: Any, spec: Any) -> BenchItems:
        """How many items a benchmark asks and how long they are (read once per benchmark)."""
        if id(spec) not in self._items:
            self._items[id(spec)] = self._bench_items(bench, spec)
            self._names[id(spec)] = spec.name
        return self._items[id(spec)]

    def benchmarks(self) -> dict[str, BenchItems]:
        """Benchmark name -> what the estimate took for it (those priced so far)."""
        return {self._names[key]: items for key, items in self._items.items()}

    def _bench_items(self, bench: Any, spec: Any) -> BenchItems:
        if bench.uses_run:  # held-out prompts of the experiment's own source
            n = spec.subset or DEFAULT_HELD_OUT
            return BenchItems(n, 1, None, self.prompts, "held-out prompts of the prompt source")
        try:
            data = bench.load()
        except HarnessError:
            key = f"{spec.name}:{getattr(bench.params, 'version', '')}" if spec.name == "arena_hard" else spec.name
            official = OFFICIAL_ITEMS.get(key)
            n = min(spec.subset, official) if spec.subset and official else spec.subset or official or 100
            what = "subset" if spec.subset else "official size" if official else "assumed (unknown benchmark)"
            return BenchItems(n, 2 if spec.name == "mt_bench" else 1, None, None,
                              f"{what}; its data does not load here")
        conversations = bench.greedy_conversations(data)
        turns = max((len(it.get("turns") or [0]) for it in data.items), default=1)
        firsts = conversations or [[{"role": "user", "content": str((it.get("turns") or [""])[0])}]
                                   for it in data.items]
        chars = statistics.fmean(sum(len(m["content"]) for m in c) for c in firsts) if firsts else None
        references = [len(_reference(it)) for it in data.items]
        return BenchItems(len(data.items), turns, chars, conversations, f"data: {data.source}",
                          statistics.fmean(references) if references else None)

    def item_prompt(self, tokens: Tokens, items: BenchItems) -> float:
        """Mean prompt tokens of a benchmark's first turn, as the model answering it is asked."""
        key = (id(tokens), id(items))
        if key not in self._item_prompts:
            self._item_prompts[key] = self._item_prompt(tokens, items)
        return self._item_prompts[key]

    def _item_prompt(self, tokens: Tokens, items: BenchItems) -> float:
        if items.conversations:
            return statistics.fmean(tokens.prompt(c) for c in items.conversations)
        if items.prompt_chars is not None:
            return tokens.question(items.prompt_chars / CHARS_PER_TOKEN)
        return tokens.question(ASSUMED_PROMPT_TOKENS)
