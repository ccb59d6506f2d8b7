"""report.html's sample viewer: every row's answer to each item side by side, with the judge's verdict.

The data (`harness.report.samples.build_samples`) is embedded once, as JSON in a
`<script type="application/json">`; a small inline script renders one page of items at a time, so a run of
26 rows x 1,300 items costs one JSON parse and a few hundred DOM nodes, not 30,000 rows of HTML. Every run
string reaches the page through `textContent` (never parsed as HTML), and the JSON is escaped so no text
can close its script element (`samples.script_json`).

Filters live in the URL hash, so a view can be linked: `#samples=alpaca_eval2&row=pad` (pad's answers to
AlpacaEval 2), `&a=pad&outcome=lost&b=sft` (the items where pad's per-item score, averaged over its seeds,
is worse than sft's), `&cut=1` (items with an answer cut at max_new_tokens), `&q=text`, `&page=2`, `&per=50`.
Every score cell of the scores table links to its row's items of its benchmark.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from harness.report.columns import Column
from harness.report.leaderboard import Leaderboard
from harness.report.paired import primary_column
from harness.report.samples import script_json

CSS = """
#samples .controls{display:flex;flex-wrap:wrap;gap:8px 18px;align-items:center;font:12px Helvetica,Arial,sans-serif;
 background:#f6f6f6;border:1px solid #ddd;padding:8px}
#samples fieldset{border:0;padding:0;margin:0;display:flex;flex-wrap:wrap;gap:2px 10px;max-width:100%}
#samples .status{font:12px Helvetica,Arial,sans-serif;margin:6px 0;color:#333}
#samples ul.missing{font-size:11px;color:#555;margin:4px 0}
article.sample{border:1px solid #ccc;margin:14px 0;padding:8px;font:12px Helvetica,Arial,sans-serif}
article.sample>header{font-weight:bold;margin-bottom:4px}
article.sample pre{white-space:pre-wrap;word-break:break-word;margin:2px 0 6px;font:12px/1.35 Menlo,Consolas,monospace}
.sample .prompt pre{background:#eef3fb;padding:4px} .sample .who{color:#555;font-size:11px}
.sample .answers{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:8px;margin-top:6px}
.sample .answer{border:1px solid #ddd;padding:4px 6px;background:#fff}
.sample .answer pre{max-height:26em;overflow:auto} .sample .answer.cut{border-color:#c33}
.sample .answer h4{margin:0 0 2px;font-size:12px} .sample .flags{color:#444;font-size:11px;margin:0 0 4px}
.sample .flag-cut{color:#b00;font-weight:bold} .sample .verdict{font-size:11px;margin:2px 0}
.sample details pre{background:#fafafa;max-height:20em;overflow:auto} .sample .none{color:#777;font-style:italic}
"""

LEGEND = (
    "Each item's prompt and every row's answer side by side, with the judge's verdict and reasoning (or the "
    "per-item metrics of a judge-free benchmark), whether each answer finished or was cut at max_new_tokens, "
    "and its length. Per-item score: the unit the paired tests use (results.json rows[].benchmarks[b].per_item); "
    "a row's score over seeds is their mean. Click a score in the table above to see that row's items."
)

SCRIPT = r"""
(function () {
  "use strict";
  var holder = document.getElementById("samples-data"), root = document.getElementById("samples");
  if (!holder || !root) return;
  var all = JSON.parse(holder.textContent), S = all.samples, M = all.meta;
  holder.remove();  // parsed once: the DOM need not keep tens of MB of text beside the objects
  var state = {bench: "", rows: [], a: "", b: "", outcome: "", cut: false, q: "", page: 0, per: 10};
  var byName = {};
  S.rows.forEach(function (r, k) { (byName[r.row] = byName[r.row] || []).push(k); });
  var rowNames = M.rowOrder.filter(function (n) { return byName[n]; })
    .concat(Object.keys(byName).filter(function (n) { return M.rowOrder.indexOf(n) < 0; }));

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function add(parent) { for (var i = 1; i < arguments.length; i++) if (arguments[i]) parent.appendChild(arguments[i]); return parent; }
  function num(v) { return v === null || v === undefined ? "n/a" : (Math.round(v * 1000) / 1000).toString(); }
  function bench() { return S.benchmarks.filter(function (b) { return b.name === state.bench; })[0]; }
  function info(b) { return M.benchmarks[b.name] || {title: b.name, higherIsBetter: true}; }
  function shown(b) {  // the instances (row, seed) shown: the chosen rows' seeds that answered this benchmark,
    var out = [], order = (state.outcome ? [state.a, state.b] : []).concat(rowNames);  // compared rows first
    order.filter(function (n, i) { return n && order.indexOf(n) === i && state.rows.indexOf(n) >= 0; })
      .forEach(function (n) { (byName[n] || []).forEach(function (k) { if (b.cells[k]) out.push(k); }); });
    return out;
  }
  function rowScore(b, name, i) {  // a row's per-item score, averaged over its seeds
    var sum = 0, n = 0;
    (byName[name] || []).forEach(function (k) {
      var c = b.cells[k] && b.cells[k][i];
      if (c && c.score !== null && c.score !== undefined) { sum += c.score; n++; }
    });
    return n ? sum / n : null;
  }
  function outcomeHolds(b, i) {
    if (!state.outcome || !state.a || !state.b) return true;
    var x = rowScore(b, state.a, i), y = rowScore(b, state.b, i);
    if (x === null || y === null) return false;
    var d = (x - y) * (info(b).higherIsBetter ? 1 : -1), eps = 1e-9;
    return {lost: d < -eps, won: d > eps, tied: Math.abs(d) <= eps, differ: Math.abs(d) > eps}[state.outcome];
  }
  function isCut(c) { return !!(c && c.finished && c.finished.indexOf(false) >= 0); }
  function matches(b, i, ks) {
    var item = b.items[i];
    if (state.q) {
      var hay = [String(item.id), item.category || ""].concat(item.prompt || []).join("\n").toLowerCase();
      if (hay.indexOf(state.q.toLowerCase()) < 0) return false;
    }
    if (state.cut && !ks.some(function (k) { return isCut(b.cells[k][i]); })) return false;
    if (!ks.some(function (k) { return b.cells[k][i]; })) return false;
    return outcomeHolds(b, i);
  }

  function readHash() {
    var p = new URLSearchParams(location.hash.replace(/^#/, ""));
    if (!p.has("samples")) return false;
    var names = S.benchmarks.map(function (b) { return b.name; });
    state.bench = names.indexOf(p.get("samples")) >= 0 ? p.get("samples") : names[0];
    state.a = byName[p.get("a")] ? p.get("a") : "";
    state.b = byName[p.get("b")] ? p.get("b") : "";
    state.outcome = ["lost", "won", "tied", "differ"].indexOf(p.get("outcome")) >= 0 ? p.get("outcome") : "";
    var rows = p.getAll("row").filter(function (n) { return byName[n]; });
    state.rows = rows.length ? rows : (state.outcome && state.a && state.b ? [state.a, state.b] : rowNames.slice());
    state.cut = p.get("cut") === "1";
    state.q = p.get("q") || "";
    state.page = Math.max(0, (parseInt(p.get("page"), 10) || 1) - 1);
    state.per = Math.min(500, Math.max(1, parseInt(p.get("per"), 10) || 10));
    return true;
  }
  function writeHash() {
    var p = new URLSearchParams();
    p.set("samples", state.bench);
    if (state.rows.length !== rowNames.length) state.rows.forEach(function (n) { p.append("row", n); });
    if (state.outcome && state.a && state.b) { p.set("a", state.a); p.set("outcome", state.outcome); p.set("b", state.b); }
    if (state.cut) p.set("cut", "1");
    if (state.q) p.set("q", state.q);
    if (state.page) p.set("page", String(state.page + 1));
    if (state.per !== 10) p.set("per", String(state.per));
    history.replaceState(null, "", "#" + p.toString());
  }

  var controls = el("div", "controls"), status = el("div", "status"), list = el("div");
  list.id = "samples-items"; status.id = "samples-status";
  function select(id, options, value, onchange) {
    var s = el("select"); s.id = id;
    options.forEach(function (o) { var opt = el("option", null, o[1]); opt.value = o[0]; s.appendChild(opt); });
    s.value = value;
    s.addEventListener("change", function () { onchange(s.value); changed(); });
    return s;
  }
  function label(text, input) { return add(el("label", null, text + " "), input); }
  function buildControls() {
    controls.textContent = "";
    var rowOptions = [["", "(row)"]].concat(rowNames.map(function (n) { return [n, n]; }));
    add(controls, label("Benchmark", select("samples-benchmark", S.benchmarks.map(function (b) {
      return [b.name, info(b).title + " (" + b.items.length + " items)"]; }), state.bench, function (v) { state.bench = v; })));
    var rows = el("fieldset"); rows.id = "samples-rows";
    add(rows, el("span", null, "Rows:"));
    rowNames.forEach(function (n) {
      var box = el("input"); box.type = "checkbox"; box.value = n; box.checked = state.rows.indexOf(n) >= 0;
      box.addEventListener("change", function () {
        state.rows = rowNames.filter(function (m) { return m === n ? box.checked : state.rows.indexOf(m) >= 0; });
        changed();
      });
      add(rows, add(el("label"), box, document.createTextNode(" " + n)));
    });
    [["all", rowNames], ["none", []]].forEach(function (pick) {
      var btn = el("button", null, pick[0]); btn.type = "button";
      btn.addEventListener("click", function () { state.rows = pick[1].slice(); changed(); });
      rows.appendChild(btn);
    });
    add(controls, rows);
    var compare = function () {  // picking a comparison shows the two rows it compares
      if (state.outcome && state.a && state.b) state.rows = [state.a, state.b];
    };
    add(controls, add(el("span"), el("span", null, "Items where "),
      select("samples-a", rowOptions, state.a, function (v) { state.a = v; compare(); }),
      select("samples-outcome", [["", "(any outcome)"], ["lost", "lost to"], ["won", "beat"], ["tied", "tied with"],
        ["differ", "differs from"]], state.outcome, function (v) { state.outcome = v; compare(); }),
      select("samples-b", rowOptions, state.b, function (v) { state.b = v; compare(); })));
    var cut = el("input"); cut.type = "checkbox"; cut.id = "samples-cut"; cut.checked = state.cut;
    cut.addEventListener("change", function () { state.cut = cut.checked; changed(); });
    add(controls, label("Only cut answers", cut));
    var q = el("input"); q.type = "search"; q.id = "samples-q"; q.value = state.q; q.placeholder = "id or prompt text";
    q.addEventListener("change", function () { state.q = q.value; changed(); });
    add(controls, label("Search", q));
  }
  function changed() { state.page = 0; writeHash(); buildControls(); render(); }

  function pre(text) { return el("pre", null, text === null || text === undefined ? "" : text); }
  function details(summary, text) { return add(el("details"), el("summary", null, summary), pre(text)); }
  function flags(c) {
    var p = el("p", "flags"), parts = ["score " + num(c.score), c.chars.map(function (n) { return n.toLocaleString("en-US"); })
      .join(" + ") + " chars" + (c.tokens ? " (" + c.tokens + " tokens)" : "")];
    p.textContent = parts.join(" \u00b7 ") + " \u00b7 ";
    if (!c.finished) add(p, el("span", null, "finished: not recorded"));
    else if (isCut(c)) add(p, el("span", "flag-cut", "CUT at max_new_tokens" + (c.finished.length > 1 ? " (turn " +
      c.finished.map(function (f, t) { return f ? null : t + 1; }).filter(Boolean).join(", ") + ")" : "")));
    else add(p, el("span", null, "finished"));
    return p;
  }
  function answer(c, k) {
    var r = S.rows[k], box = el("section", "answer" + (isCut(c) ? " cut" : ""));
    box.setAttribute("data-row", r.row); box.setAttribute("data-seed", r.seed === null ? "" : String(r.seed));
    add(box, el("h4", null, r.label));
    if (!c) return add(box, el("p", "none", "no answer to this item"));
    add(box, flags(c));
    c.turns.forEach(function (t, n) { if (c.turns.length > 1) add(box, el("div", "who", "Assistant, turn " + (n + 1))); add(box, pre(t)); });
    (c.judge || []).forEach(function (v) {
      add(box, el("div", "verdict", v.label + ": " + v.verdict));
      if (v.text) add(box, details("judge's reasoning (" + v.label + ")", v.text));
    });
    if (c.metrics) add(box, el("p", "verdict", Object.keys(c.metrics).map(function (m) {
      return m + ": " + JSON.stringify(c.metrics[m]); }).join("; ")));
    return box;
  }
  function itemView(b, i, ks) {
    var item = b.items[i], art = el("article", "sample");
    art.setAttribute("data-item", String(item.id));
    var head = String(item.id) + (item.category ? " \u00b7 " + item.category : "");
    if (state.outcome && state.a && state.b) head += " \u00b7 " + state.a + " " + num(rowScore(b, state.a, i)) + " vs " +
      state.b + " " + num(rowScore(b, state.b, i));
    add(art, el("header", null, head));
    var prompt = el("div", "prompt");
    if (!item.prompt) add(prompt, el("p", "none", "prompt not recorded in this benchmark's artifacts"));
    else item.prompt.forEach(function (t, n) { add(prompt, el("div", "who", "User" + (item.prompt.length > 1 ? ", turn " + (n + 1) : "")), pre(t)); });
    add(art, prompt);
    if (item.reference) add(art, details(item.reference_label || "reference answer", item.reference));
    var answers = el("div", "answers");
    ks.forEach(function (k) { add(answers, answer(b.cells[k][i], k)); });
    return add(art, answers);
  }
  function render() {
    list.textContent = "";
    var b = bench();
    if (!b) return;
    var ks = shown(b), hits = [];
    for (var i = 0; i < b.items.length; i++) if (matches(b, i, ks)) hits.push(i);
    var pages = Math.max(1, Math.ceil(hits.length / state.per));
    state.page = Math.min(state.page, pages - 1);
    var first = state.page * state.per, page = hits.slice(first, first + state.per);
    status.textContent = hits.length ? "Items " + (first + 1) + "\u2013" + (first + page.length) + " of " + hits.length +
      " matching (" + b.items.length + " in " + info(b).title + "); rows shown: " + ks.length + " (row x seed). " +
      "Per-item score: " + info(b).score + ", " + (info(b).higherIsBetter ? "higher" : "lower") + " is better. "
      : "No item matches these filters (" + b.items.length + " in " + info(b).title + "). ";
    [["previous", -1], ["next", 1]].forEach(function (step) {
      var btn = el("button", null, step[0]); btn.type = "button"; btn.id = "samples-" + step[0];
      btn.disabled = state.page + step[1] < 0 || state.page + step[1] >= pages;
      btn.addEventListener("click", function () { state.page += step[1]; writeHash(); render(); root.scrollIntoView(); });
      status.appendChild(btn);
    });
    page.forEach(function (i) { list.appendChild(itemView(b, i, ks)); });
  }

  function notes() {
    var box = el("div");
    if (S.text_cap) add(box, el("p", "legend", "Texts longer than " + S.text_cap.toLocaleString("en-US") + " characters " +
      "are shortened in this report (head and tail kept, the cut marked); lengths are of the full texts."));
    if (S.missing.length) {
      add(box, el("p", "legend", "No samples here for:"));
      var ul = add(box, el("ul", "missing"));
      S.missing.forEach(function (m) { add(ul, el("li", null, m.label + (m.benchmark ? " on " + m.benchmark : "") + ": " + m.reason)); });
    }
    return box;
  }
  root.textContent = "";
  if (!S.benchmarks.length) {
    add(root, el("p", "empty", "No samples in this report: no row's answers could be read."), notes());
    return;
  }
  state.bench = S.benchmarks[0].name; state.rows = rowNames.slice();
  var linked = readHash();
  buildControls();
  add(root, controls, notes(), status, list);
  render();
  if (linked) root.scrollIntoView();
  window.addEventListener("hashchange", function () { if (readHash()) { buildControls(); render(); root.scrollIntoView(); } });
})();
"""


def _score_label(col: Column, bench: dict[str, Any]) -> str:
    """The per-item score's unit, as `paired.per_item_label` names it: a percent column whose items all lie
    in [0, 1] is scored per item as a fraction (a win counts 1, not 100)."""
    scores = [c["score"] for cells in bench["cells"].values() for c in cells if c and c["score"] is not None]
    if "%" in col.label and scores and all(abs(v) <= 1 for v in scores):
        return f"{col.group} {col.label.replace('(%)', '').replace('%', '').strip()} (fraction), per item"
    return f"{col.group} {col.label}, per item"


class SampleViewer:
    """The viewer's section of report.html and the links into it, for one leaderboard and its samples."""

    def __init__(self, lb: Leaderboard, samples: dict[str, Any]) -> None:
        self.lb, self.samples = lb, samples
        rows = samples.get("rows") or []
        self._answered = {(rows[int(k)]["row"], b["name"]) for b in samples.get("benchmarks") or []
                          for k in b["cells"]}

    def link(self, row: str, benchmark: str) -> str | None:
        """The hash that shows `row`'s answers to `benchmark`, where the viewer has them."""
        if (row, benchmark) not in self._answered:
            return None
        return f"#samples={quote(benchmark, safe='')}&row={quote(row, safe='')}"

    def meta(self) -> dict[str, Any]:
        """What the viewer takes from the leaderboard: the row order, each benchmark's title and which way
        its per-item scores are better (a lower-is-better benchmark reverses "lost to")."""
        benchmarks = {}
        for b in self.samples.get("benchmarks") or []:
            col = primary_column(self.lb.columns, b["name"], self.lb.rows)
            benchmarks[b["name"]] = {
                "title": col.group if col else b["name"],
                "higherIsBetter": col.higher_is_better if col else True,
                "score": _score_label(col, b) if col else "the benchmark's per-item score",
            }
        return {"rowOrder": [r.row for r in self.lb.rows], "benchmarks": benchmarks}

    def html(self) -> str:
        if not self.samples.get("benchmarks"):
            return self._nothing_to_show()
        data = script_json({"samples": self.samples, "meta": self.meta()})
        return "\n".join([
            '<h2 id="samples-heading">Samples</h2>',
            f'<p class="legend">{escape(LEGEND)}</p>',
            '<div id="samples"><noscript><p class="empty">The sample viewer needs JavaScript.</p></noscript></div>',
            f'<script type="application/json" id="samples-data">{data}</script>',
            f"<script>{SCRIPT}</script>",
        ])

    def _nothing_to_show(self) -> str:
        """No row's answers could be read: said in plain HTML (no data, so no script), with each reason."""
        missing = "".join(f"<li>{escape(m['label'])}{' on ' + escape(m['benchmark']) if m.get('benchmark') else ''}: "
                          f"{escape(m['reason'])}</li>" for m in self.samples.get("missing") or [])
        return ('<h2 id="samples-heading">Samples</h2><div id="samples"><p class="empty">No samples in this report: '
                "no row's answers could be read.</p>" + (f'<ul class="missing">{missing}</ul>' if missing else "")
                + "</div>")
