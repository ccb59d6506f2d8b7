"""A student directory (or an export) goes to the Hugging Face hub, with a model card.

`push_folder` uses huggingface_hub's own upload API: `HfApi.create_repo(exist_ok=True)` then one
`upload_folder` commit. Small files go in the commit itself; large ones (weights) take the hub's LFS / Xet
path, which the hub chooses per file (its `preupload` answer) and huggingface_hub carries out (tests push
small files on loopback; the LFS / Xet transfer and real hub authentication are not tested here). The card
is uploaded as the repo's README.md without writing into `folder`: a train artifact is never rewritten (its
manifest checks its files), so the folder is staged as links beside the card.

`model_card` writes that README.md from a run's `results.json` (`RunResults`) and one of its rows
(`RowResult`): front matter the hub reads (library, base model, tags) and a body that says what the student
is (teacher, student base, method, its params and optimizer settings), what it cost (the matched budget and
the row's accounting) and how it scored (per benchmark, with the judge and the data source of each).
"""

from __future__ import annotations

import importlib
import os
import re
import socket
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.environment import OFFLINE_VARIABLES, hub_offline
from harness.errors import HarnessError
from harness.results import BenchmarkResult, RowResult, RunResults

CARD_FILE = "README.md"
# Harness model names that stand for a hub model (the offline SmolLM2 is its GGUF, de-quantized).
HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# --------------------------------------------------------------------------------------------- push


def push_folder(folder: Path, repo_id: str, *, card: str | None, token: str | None, private: bool) -> str:
    """Upload every file of `folder` to the model repo `repo_id` (created if missing) in one commit, with
    `card` as its README.md when given; returns the commit's URL. `token`: None takes huggingface_hub's own
    (HF_TOKEN, else a saved login). `private` applies to a repo this call creates (an existing one keeps its
    visibility). HF_ENDPOINT names another hub (read now, not at import)."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not folder.is_dir():
        raise HarnessError(f"cannot push {folder}: not a directory")
    if hub_offline():  # the harness's one offline switch, whichever variable set it
        raise HarnessError(f"cannot push to {repo_id}: the hub is switched off here ({', '.join(OFFLINE_VARIABLES)}"
                           f"); unset them to push")
    # huggingface_hub reads HF_ENDPOINT once, at import; None keeps its own default.
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    api = HfApi(endpoint=endpoint, token=token)
    with _hub_errors(api.endpoint, repo_id), _staged(folder, card) as upload:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=upload, repo_type="model",
                                   commit_message="Upload a student trained by pad-harness")
    return str(commit.commit_url)


@contextmanager
def _staged(folder: Path, card: str | None) -> Iterator[Path]:
    """`folder` itself, or (with a card) a temporary folder of links to its files beside the card."""
    if card is None:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="pad-harness-push-") as tmp:
        stage = Path(tmp)
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and relative.as_posix() != CARD_FILE:
                (stage / relative).parent.mkdir(parents=True, exist_ok=True)
                (stage / relative).symlink_to(path.resolve())
        (stage / CARD_FILE).write_text(card, encoding="utf-8")
        yield stage


@contextmanager
def _hub_errors(endpoint: str, repo_id: str) -> Iterator[None]:
    """What a user can fix (offline mode, no or wrong token, unreachable hub) as one message."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        yield
    except OfflineModeIsEnabled:  # huggingface_hub read HF_HUB_OFFLINE when it was imported
        raise HarnessError(f"cannot push to {repo_id}: huggingface_hub was imported with HF_HUB_OFFLINE set; "
                           f"unset it before starting to push") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise HarnessError(
                f"the hub at {endpoint} refused to create or write {repo_id} (HTTP {status}): set HF_TOKEN (or "
                f"`huggingface-cli login`) to a token with write access to that namespace"
            ) from None
        raise HarnessError(f"pushing to {repo_id} at {endpoint} failed: {exc}") from None
    except _transport_errors() as exc:  # connection refused, DNS, TLS: the hub cannot be reached at all
        raise HarnessError(f"cannot reach the hub at {endpoint} ({type(exc).__name__}: {exc}); check the "
                           f"network or HF_ENDPOINT") from None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The errors an unreachable hub raises. huggingface_hub has spoken HTTP through requests, httpx and httpx2
    across its versions; a local file error (reading the folder) is not one of these."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror, ssl.SSLError]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests.exceptions", ("ConnectionError", "Timeout"))):
        try:
            loaded = importlib.import_module(module)
        except ImportError:
            continue
        errors += [getattr(loaded, name) for name in names if hasattr(loaded, name)]
    return tuple(errors)


# --------------------------------------------------------------------------------------------- card


def model_card(results: RunResults, row: RowResult) -> str:
    """The README.md of `row`'s student: hub front matter, then what it is, what it cost, how it scored."""
    from huggingface_hub import ModelCardData

    student = _model_name(results.experiment.get("student"))
    method = row.method or row.row
    front = ModelCardData(library_name="transformers", base_model=hub_base_model(student),
                          tags=["pad-harness", "distillation", method]).to_yaml()
    sections = [
        f"---\n{front}\n---",
        f"# {row.model}",
        _what_it_is(results, row),
        _method_section(results, row),
        _budget_section(results, row),
        _scores_section(row),
        _usage_section(),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def hub_base_model(model: str) -> str | None:
    """The hub id of a student base (`owner/name`, or the hub model a harness alias stands for); None for a
    local directory or a tiny random model, which the hub cannot link to."""
    if model in HUB_IDS:
        return HUB_IDS[model]
    if model.startswith("tiny:") or Path(model).expanduser().exists() or not _HUB_ID.match(model):
        return None
    return model


def _model_name(spec: Any) -> str:
    """A model entry of the experiment (`{"model": ..., ...}`) by its name."""
    return str(spec["model"]) if isinstance(spec, dict) and spec.get("model") else "not recorded"


def _what_it_is(results: RunResults, row: RowResult) -> str:
    exp = results.experiment
    teacher, student = exp.get("teacher") or {}, exp.get("student") or {}
    lines = [
        f"A student distilled by pad-harness in the experiment `{results.experiment_name}` (setting "
        f"`{results.setting}`), row `{row.row}`.",
        "",
        "| | |",
        "|---|---|",
        f"| Teacher | `{_model_name(teacher)}`{_context_note(teacher, 'only the teacher saw')} |",
        f"| Student base | `{_model_name(student)}`{_context_note(student, 'the student saw too')} |",
        f"| Method | `{row.method or row.row}` |",
        f"| Seed | {row.seed} |",
    ]
    return "\n".join(lines)


def _context_note(spec: dict[str, Any], whose: str) -> str:
    parts = []
    if spec.get("system_prompt"):
        parts.append("a system prompt")
    if spec.get("demonstrations"):
        parts.append(f"{len(spec['demonstrations'])} demonstrations")
    return f" + {' and '.join(parts)} {whose}" if parts else ""


def _method_entry(results: RunResults, row: RowResult) -> dict[str, Any]:
    for entry in results.experiment.get("methods") or []:
        if (entry.get("label") or entry.get("name")) == row.row:
            return dict(entry)
    return {}


def _method_section(results: RunResults, row: RowResult) -> str:
    entry = _method_entry(results, row)
    params = dict(entry.get("params") or {})
    selected = (row.tuning or {}).get("selected_settings") or {}
    params.update({key.removeprefix("params."): value for key, value in selected.items() if key.startswith("params.")})
    lines = ["## Method", "", "Parameters (as set in the experiment, and chosen by tuning; any other at the "
             "method's default):", "", _bullets(params) or "- (defaults)", "", "Optimizer settings:", "",
             _bullets(row.optimizer) or "- (the budget's defaults)"]
    if row.tuning.get("tuned"):
        lines += ["", f"Tuned: {row.tuning.get('trials')} trials on a dev split; selected "
                      f"{_inline(selected)}."]
    return "\n".join(lines)


# The budget's keys every method shares (matched compute), in the order a reader wants them.
_MATCHED = ("epochs", "max_steps", "effective_batch", "micro_batch", "max_length", "max_prompt_length",
            "max_student_tokens", "max_flops")
# What the row's accounting says it used, with a label each.
_USED = (("optimizer_steps", "optimizer steps"), ("prompts_seen", "prompts seen"),
         ("student_forward_tokens", "student tokens (forward)"),
         ("student_backward_tokens", "student tokens (backward)"),
         ("teacher_forward_tokens", "teacher tokens (forward, shared precompute included)"),
         ("training_flops", "training FLOPs"), ("total_flops", "total FLOPs (shared precompute included)"),
         ("wall_time_s", "wall time (s)"), ("device_name", "device"), ("num_processes", "processes"),
         ("stop_reason", "stopped by"))


def _budget_section(results: RunResults, row: RowResult) -> str:
    budget = results.experiment.get("budget") or {}
    matched = {key: budget[key] for key in _MATCHED if budget.get(key) is not None}
    used = {label: row.accounting[key] for key, label in _USED if row.accounting.get(key) is not None}
    return "\n".join(["## Budget", "", "Matched across every method of the experiment:", "",
                      _bullets(matched) or "- (none recorded)", "", "Used by this row:", "",
                      _bullets(used) or "- (no accounting recorded)"])


def _scores_section(row: RowResult) -> str:
    if not row.benchmarks:
        return ""
    lines = ["## Scores", "", "| Benchmark | Scores | Judge | Data source |", "|---|---|---|---|"]
    for name, bench in row.benchmarks.items():
        lines.append(f"| {name} | {_scores(bench)} | {_judge(bench)} | {_cell(bench.source) or 'not recorded'} |")
    return "\n".join(lines)


def _scores(bench: BenchmarkResult) -> str:
    """Every numeric metric, the headline first, each with its standard error where one is reported."""
    metrics = {k: v for k, v in bench.metrics.items() if isinstance(v, int | float) and not k.endswith("_stderr")}
    order = sorted(metrics, key=lambda k: k != bench.headline)
    shown = []
    for key in order:
        stderr = bench.metrics.get(f"{key}_stderr")
        shown.append(f"{key} {_number(metrics[key])}" + (f" ± {_number(stderr)}" if stderr is not None else ""))
    return "; ".join(shown) or "no score"


def _judge(bench: BenchmarkResult) -> str:
    if bench.judge_is_official is None:
        return "none (judge-free)"
    model = bench.judge.get("model") or "not recorded"
    name = str(model.get("model") if isinstance(model, dict) else model)  # a local judge nests its identity
    official = "the official judge" if bench.judge_is_official else f"not official; official: `{bench.official_judge}`"
    return f"`{name}` ({official})"


def _usage_section() -> str:
    return "\n".join([
        "## Use", "",
        "The directory is a complete transformers model: its tokenizer carries the chat template it trained "
        "under and its generation config stops where pad-harness stopped (end of turn and eos ids). "
        "`pad_harness.json` records the rest of its context: the `date_string` its prompts were rendered with "
        "and any system prompt or demonstrations it saw.", "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        "REPO = \"<this repository's id>\"",
        "tokenizer = AutoTokenizer.from_pretrained(REPO)",
        "model = AutoModelForCausalLM.from_pretrained(REPO)",
        "inputs = tokenizer.apply_chat_template([{\"role\": \"user\", \"content\": \"Hi!\"}],",
        "                                       add_generation_prompt=True, return_tensors=\"pt\", return_dict=True)",
        "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=128)[0, inputs[\"input_ids\"].shape[1]:],",
        "                       skip_special_tokens=True))",
        "```",
    ])


def _bullets(values: dict[str, Any]) -> str:
    return "\n".join(f"- {key}: {_number(value)}" for key, value in values.items())


def _inline(values: dict[str, Any]) -> str:
    return ", ".join(f"{key} = {_number(value)}" for key, value in values.items()) or "the defaults"


def _number(value: Any) -> str:
    """Floats short (4 significant digits; FLOPs-sized ones in e-notation); everything else as it is."""
    if not isinstance(value, float) or value.is_integer() and abs(value) < 1e6:
        return str(value)
    return f"{value:.3g}" if abs(value) >= 1e6 or abs(value) < 1e-3 else f"{value:.4g}"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
