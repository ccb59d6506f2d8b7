"""docs/experiment-keys.md: the keys of the schema and of each built-in plugin's `Params`, one table per
section, with what each key changes (its description) and which cached stages it enters (`cache_probe`)."""

from __future__ import annotations

from harness.reference.cache_probe import Probe, probe_all
from harness.reference.schema import PLUGIN_KINDS, Key, Plugin, builtin_plugins, experiment_keys

REGENERATE = "python -m harness.reference > docs/experiment-keys.md"
HEADER = f"""# Experiment-file keys

Every key an experiment file (`leaderboards/*.yaml`) may hold, generated from the schema
(`harness/config.py`), each built-in plugin's `Params` and the code that builds cache keys by
`{REGENERATE}`. Do not edit it by hand: `tests/test_experiment_keys_reference.py` fails when the page
differs from what the code generates. `[]` marks a list entry (`benchmarks[].subset`); a plugin's parameters
go under its entry (`methods: [{{name: dpo, params: {{beta: 0.1}}}}]`, `backends: {{vllm: {{...}}}}`).

- **Allowed**: the choices, or the bounds the schema enforces; anything else is refused with one message
  that names the key.
- **Cache key**: the stages whose cached artifacts a change of the key invalidates (found by planning a
  reference experiment with the key changed: `harness/reference/cache_probe.py`); those stages recompute
  on the next run, the others are reused. "no": the key changes how a run is made or shown, not what
  it computes. A key the probe could not change here says why.
- **Merge**: "must match" when two runs that differ in the key cannot share one leaderboard
  (`pad-harness report RUN_A RUN_B`, `harness/stages/comparable.py`).
"""


def cell(text: str) -> str:
    """Text in a Markdown table cell: one line, its pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def cache_text(probe: Probe) -> str:
    if not probe.tried:
        return f"not probed: {probe.note}" if probe.note else "not probed"
    return ", ".join(probe.stages) if probe.stages else "no"


def merge_text(probe: Probe) -> str:
    return "" if not probe.tried else ("must match" if probe.merge else "may differ")


def table(keys: list[Key], probes: dict[str, Probe], prefix: str = "") -> list[str]:
    lines = ["| Key | Type | Default | Allowed | Cache key | Merge | What it changes |",
             "|---|---|---|---|---|---|---|"]
    for key in keys:
        probe = probes.get(prefix + key.path)
        cache, merge = ("(its keys below)", "") if probe is None else (cache_text(probe), merge_text(probe))
        lines.append(f"| `{key.path}` | {cell(key.type_text)} | {cell(key.default_text)} | {cell(key.allowed_text)} "
                     f"| {cell(cache)} | {merge} | {cell(key.description)} |")
    return lines


def render() -> str:
    keys = experiment_keys()
    plugins = builtin_plugins()
    probes = probe_all(keys, plugins)
    out = [HEADER]
    sections: dict[str, list[Key]] = {}
    for key in keys:
        top = key.path.split(".", 1)[0].removesuffix("[]")
        section = top if "." in key.path or _holds_keys(key) else "top level"
        sections.setdefault(section, []).append(key)
    for section, members in sections.items():
        out += [f"## `{section}`" if section != "top level" else "## Top level", ""]
        out += table(members, probes) + [""]
    for kind, (title, _) in PLUGIN_KINDS.items():
        of_kind = [p for p in plugins if p.kind == kind]
        if not of_kind:
            continue
        out += [f"## {title}", ""]
        for plugin in of_kind:
            out += _plugin_section(plugin, probes)
    return "\n".join(out).rstrip() + "\n"


def _holds_keys(key: Key) -> bool:
    from harness.reference.schema import nested_model

    return nested_model(key.info.annotation) is not None


def _plugin_section(plugin: Plugin, probes: dict[str, Probe]) -> list[str]:
    summary = " ".join((plugin.cls.__doc__ or "").strip().split("\n\n")[0].split())
    head = [f"### `{plugin.name}`", "", summary, ""]
    if plugin.params is None:
        return head + ["No parameters.", ""]
    return head + [f"Under `{plugin.where}`.", ""] + table(plugin.keys(), probes, f"{plugin.where}.") + [""]
