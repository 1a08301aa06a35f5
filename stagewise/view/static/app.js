// stagewise view: the run page with its item list (#/?filters) and the item page (#/item?id=&graph=).
// Everything comes from this server's JSON API; text is always set as text, never parsed as HTML.
"use strict";

const app = document.getElementById("app");
let run = null; // /api/run, fetched once per page load (and on returning to the run page)

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(path, params) {
  const qs = params ? "?" + new URLSearchParams(params).toString() : "";
  const r = await fetch("/api/" + path + qs);
  if (!r.ok) throw new Error(`${r.status}: ${await r.text()}`);
  return r.json();
}

const fmt = {
  usd: (v) => (v === null || v === undefined ? "–" : "$" + Number(v).toFixed(v >= 1 ? 2 : 4)),
  s: (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(v >= 10 ? 1 : 2) + " s"),
  n: (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US")),
  pct: (a, b) => (b ? (100 * a / b).toFixed(1) + "%" : "–"),
};

function mark(correct, status) {
  if (status && status !== "ok") return h("span", { class: "badge err", title: "error row" }, "error");
  if (correct === true) return h("span", { class: "badge ok", title: "correct" }, "✓ right");
  if (correct === false) return h("span", { class: "badge bad", title: "incorrect" }, "✗ wrong");
  return h("span", { class: "badge", title: "no reference" }, "–");
}

function hashParams() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  return { path: path || "/", params: new URLSearchParams(query || "") };
}

function go(path, params) {
  const clean = {};
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) clean[k] = v;
  const qs = new URLSearchParams(clean).toString();
  location.hash = "#" + path + (qs ? "?" + qs : "");
}

// ---- run page ---------------------------------------------------------------------------------------

function runTable(info) {
  const extra = new Set();
  // the report's judge figures; its per-stage `judge` table is an object, not a column
  for (const g of info.graphs) {
    for (const [k, v] of Object.entries(g.report || {})) if (k.startsWith("judge") && !(v && typeof v === "object")) extra.add(k);
  }
  const head = ["graph", "items", "ok", "errors by cause", "accuracy", "calls", "tokens", "cost", "wall time", ...extra];
  return h("table", { class: "figures", id: "run-figures" },
    h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c.replace(/_/g, " "))))),
    h("tbody", {}, info.graphs.map((g) => {
      const causes = Object.entries(g.errors_by_cause);
      return h("tr", {},
        h("td", {}, h("b", {}, g.graph), g.model ? h("div", { class: "muted small" }, g.model) : null),
        h("td", {}, fmt.n(g.items)), h("td", {}, fmt.n(g.ok)),
        h("td", {}, causes.length ? causes.map(([c, n]) => h("span", { class: "badge err" }, `${c} ${n}`)) : "none"),
        h("td", {}, g.scored ? `${fmt.pct(g.correct, g.scored)} (${g.correct}/${g.scored})` : "–"),
        h("td", {}, fmt.n(g.calls)), h("td", {}, fmt.n(g.tokens)), h("td", {}, fmt.usd(g.cost_usd)),
        h("td", {}, fmt.s(g.wall_s)),
        [...extra].map((k) => h("td", {}, g.report && g.report[k] !== null && g.report[k] !== undefined ? String(g.report[k]) : "–")));
    })));
}

function select(name, label, options, value) {
  return h("label", {}, label + " ",
    h("select", { name, id: "f-" + name },
      options.map(([v, text]) => h("option", { value: v, selected: v === (value || "") }, text))));
}

function filters(info, params) {
  const graphs = info.graph_names;
  const form = h("form", { class: "filters", id: "filters" },
    graphs.length > 1 ? select("graph", "graph", [["", "all"], ...graphs.map((g) => [g, g])], params.get("graph")) : null,
    select("status", "status", [["", "any"], ["ok", "ok"], ["error", "error"]], params.get("status")),
    select("correct", "answer", [["", "any"], ["1", "right"], ["0", "wrong"], ["none", "not scored"]], params.get("correct")),
    select("cause", "error cause", [["", "any"], ...info.causes.map((c) => [c, c])], params.get("cause")),
    select("stage", "trouble at stage", [["", "any"], ...info.stages.map((s) => [s, s])], params.get("stage")),
    graphs.length > 1 ? disagreeSelect(graphs, params) : null,
    h("label", {}, "text ", h("input", { name: "q", id: "f-q", type: "search", value: params.get("q") || "", placeholder: "id, question, answer, error" })),
    select("sort", "sort", [["", "id"], ["cost", "cost"], ["latency", "latency"], ["calls", "calls"], ["tokens", "tokens"]], params.get("sort")),
    select("order", "", [["", "default"], ["desc", "high first"], ["asc", "low first"]], params.get("order")),
    h("button", { type: "submit" }, "apply"));
  const submit = (ev) => {
    if (ev) ev.preventDefault();
    const p = Object.fromEntries(new FormData(form).entries());
    if (p.disagree) { const [right, wrong] = p.disagree.split("|"); p.right = right; p.wrong = wrong; }
    delete p.disagree;
    go("/", p);
  };
  form.addEventListener("submit", submit);
  form.querySelectorAll("select").forEach((s) => s.addEventListener("change", () => submit()));
  return form;
}

function disagreeSelect(graphs, params) {
  const options = [["", "—"]];
  const base = graphs[0];
  for (const other of graphs.slice(1)) {
    options.push([`${other}|${base}`, `${base} wrong, ${other} right`]);
    options.push([`${base}|${other}`, `${base} right, ${other} wrong`]);
  }
  const value = params.get("right") ? `${params.get("right")}|${params.get("wrong")}` : "";
  return select("disagree", "graphs disagree", options, value);
}

function itemRow(it, compare) {
  const link = "#/item?" + new URLSearchParams(compare ? { id: it.id, graph: it.graph } : { id: it.id });
  return h("tr", { class: "item-row", "data-id": it.id, "data-graph": it.graph },
    h("td", {}, h("a", { href: link, class: "item-link" }, it.id)),
    compare ? h("td", {}, it.graph) : null,
    h("td", {}, mark(it.correct, it.status), it.error_cause ? h("span", { class: "badge err" }, it.error_cause) : null),
    h("td", { class: "q" }, it.question),
    h("td", {}, it.answer, it.reference ? h("span", { class: "muted" }, " / " + it.reference) : null),
    compare ? h("td", { class: "across" }, Object.entries(it.across || {}).map(([g, a]) =>
      h("span", { class: "badge " + (!a ? "" : a.status !== "ok" ? "err" : a.correct ? "ok" : a.correct === false ? "bad" : ""), title: g },
        g + (!a ? " –" : a.status !== "ok" ? " !" : a.correct ? " ✓" : a.correct === false ? " ✗" : "")))) : null,
    h("td", { class: "num" }, fmt.n(it.calls)), h("td", { class: "num" }, fmt.n(it.tokens)),
    h("td", { class: "num" }, fmt.usd(it.cost_usd)), h("td", { class: "num" }, fmt.s(it.latency_s)));
}

async function loadRun() {
  run = await api("run");
  document.getElementById("root").textContent = run.root + (run.compare ? "  (compare)" : "");
}

async function showRun(params) {
  await loadRun();
  const page = Number(params.get("page") || 1);
  const query = Object.fromEntries(params.entries());
  const list = await api("items", { per_page: 50, ...query });
  const pages = Math.max(1, Math.ceil(list.total / list.per_page));
  const nav = (p) => () => go("/", { ...query, page: p });
  app.replaceChildren(
    h("h2", {}, run.compare ? "Compare run" : "Run"),
    runTable(run),
    h("h2", {}, "Items"),
    filters(run, params),
    h("p", { class: "muted", id: "list-count" }, `${fmt.n(list.total)} matching · page ${page} of ${pages}`),
    h("table", { class: "items", id: "items" },
      h("thead", {}, h("tr", {}, ["item", run.compare ? "graph" : null, "result", "question", "answer / reference",
        run.compare ? "across graphs" : null, "calls", "tokens", "cost", "latency"].filter(Boolean).map((c) => h("th", {}, c)))),
      h("tbody", {}, list.items.map((it) => itemRow(it, run.compare)))),
    h("div", { class: "pager" },
      h("button", { id: "prev", disabled: page <= 1, onclick: nav(page - 1) }, "← previous"),
      h("button", { id: "next", disabled: page >= pages, onclick: nav(page + 1) }, "next →")));
}

// ---- item page --------------------------------------------------------------------------------------

function callLine(c) {
  const tokens = `${c.prompt_tokens ?? 0}+${c.completion_tokens ?? 0} tok`;
  const bits = [c.role, c.cache === "hit" ? "cache hit" : null, c.attempt ? `attempt ${c.attempt}` : null,
    c.judge_attempt > 1 ? `judge retry ${c.judge_attempt}` : null, c.n > 1 ? `sample ${c.sample + 1}/${c.n}` : null,
    tokens, fmt.usd(c.cost_usd), fmt.s(c.latency_s), c.finish_reason].filter(Boolean);
  return h("li", { class: "call " + (c.status || "") },
    h("span", { class: "status" }, c.status || "?"), " ", bits.join(" · "),
    c.error ? h("div", { class: "error" }, c.error) : null,
    c.fallback ? h("div", { class: "muted" }, "handed to " + c.fallback) : null,
    c.messages ? h("details", {}, h("summary", {}, "prompt"), h("pre", { class: "raw" }, JSON.stringify(c.messages, null, 1))) : null);
}

function calls(list) {
  return list.length ? h("ul", { class: "calls" }, list.map(callLine)) : null;
}

function candidateBox(c, step) {
  return h("div", { class: "candidate" + (c.winner ? " winner" : ""), "data-index": c.index },
    h("div", { class: "cand-head" }, h("b", {}, `#${c.index}`),
      c.winner ? h("span", { class: "badge ok chosen" }, "chosen") : null,
      c.repairs && c.repairs.length ? h("span", { class: "badge warn" }, "repaired: " + c.repairs.join("; ")) : null,
      c.text_from === "row" ? h("span", { class: "muted small", title: "this trace records no candidate texts; the row holds the chosen one" }, "text from the row") : null),
    c.text !== null && c.text !== undefined ? h("pre", { class: "text" }, c.text.trim())
      : h("p", { class: "muted small" }, step.verdicts.length ? "text not recorded in this trace" : ""),
    calls(c.calls));
}

function verdictBox(v) {
  const [a, b] = v.pair || ["?", "?"];
  return h("li", { class: "verdict parse-" + (v.parse || "none") },
    h("div", {}, v.round !== null && v.round !== undefined ? h("span", { class: "muted" }, `round ${v.round}: `) : null,
      h("b", {}, `#${a} vs #${b}`), " → ", h("b", { class: "verdict-winner" }, `#${v.winner ?? "?"}`),
      " ", h("span", { class: "badge parse" }, v.parse || "no verdict")),
    v.reason ? h("div", { class: "reason" }, "“" + v.reason + "”") : null,
    v.checks.length ? h("ul", { class: "checks" }, v.checks.map((k) => h("li", {},
      `pre-check of #${k.candidate}: `, h("b", {}, k.passed === true ? "passed" : k.passed === false ? "failed" : "unreadable"),
      k.output ? h("span", { class: "muted" }, " — " + k.output) : null))) : null,
    v.outputs && v.outputs.length ? h("details", {}, h("summary", {}, "judge output"), v.outputs.map((o) => h("pre", { class: "raw" }, o))) : null,
    calls(v.calls));
}

function stepBox(s, i) {
  return h("section", { class: "step", "data-stage": s.stage, "data-winner": s.winner ?? "" },
    h("h4", {}, `${i + 1}. ${s.stage || "step"}`, s.selection ? h("span", { class: "muted" }, " · " + s.selection) : null,
      s.winner !== null && s.winner !== undefined && s.candidates.length > 1 ? h("span", { class: "muted" }, ` · winner #${s.winner}`) : null),
    s.error ? h("div", { class: "error" }, `${s.status || "error"}: ${s.error}`) : null,
    h("div", { class: "candidates" }, s.candidates.map((c) => candidateBox(c, s))),
    s.verdicts.length ? h("ul", { class: "verdicts" }, s.verdicts.map(verdictBox)) : null,
    calls(s.calls));
}

function graphColumn(view) {
  const row = view.row || {};
  const tree = view.tree;
  const u = row.usage || {};
  const stages = row.stages || {};
  return h("div", { class: "graph-col", "data-graph": view.graph },
    h("h3", {}, view.graph, " ", mark(row.correct, row.status)),
    row.error ? h("div", { class: "error" }, row.error) : null,
    h("p", { class: "muted small" }, `${fmt.n(u.calls)} calls · ${fmt.n((u.prompt_tokens || 0) + (u.completion_tokens || 0))} tokens · ` +
      `${fmt.usd(u.cost_usd)} · ${fmt.s(row.latency_s)}` + (u.cache_hits ? ` · ${u.cache_hits} cache hits` : "") +
      (u.failed_attempts ? ` · ${u.failed_attempts} failed attempts` : "") +
      (tree.attempts.length > 1 ? ` · attempt ${tree.attempt} of ${tree.attempts.length} traces` : "")),
    h("dl", { class: "stages" }, ["summary", "caption", "reasoning", "conclusion"].map((k) =>
      [h("dt", {}, k), h("dd", {}, stages[k] ?? "–")])),
    h("h4", { class: "tree-title" }, "How it was chosen"),
    tree.steps.length ? tree.steps.map(stepBox) : h("p", { class: "muted" }, "no trace events for this item"));
}

function imageOf(views) {
  for (const v of views) {
    const img = v.row && v.row.image;
    if (!img) continue;
    if (img.startsWith("data:image/")) return h("img", { src: img, id: "item-image", alt: "item image" });
    if (img.includes("://")) return h("p", { class: "muted" }, "image at " + img + " (not fetched)");
    return h("img", { src: "/api/image?" + new URLSearchParams({ id: v.row.id, graph: v.graph }), id: "item-image", alt: "item image" });
  }
  return h("p", { class: "muted" }, "no image");
}

async function showItem(params) {
  const id = params.get("id");
  const only = params.get("graph");
  const data = await api("item", only ? { id, graph: only } : { id });
  const first = (data.graphs.find((v) => v.row) || {}).row || {};
  const back = h("a", { href: "#/", onclick: (ev) => { if (history.length > 1) { ev.preventDefault(); history.back(); } } }, "← items");
  const others = data.graph_names.length > 1
    ? (only ? h("a", { href: "#/item?" + new URLSearchParams({ id }), id: "side-by-side" }, "all graphs side by side")
      : data.graph_names.map((g) => h("a", { href: "#/item?" + new URLSearchParams({ id, graph: g }), class: "pill" }, g)))
    : null;
  app.replaceChildren(
    h("div", { class: "crumbs" }, back, " ", others),
    h("div", { class: "item-head" },
      h("div", { class: "image" }, imageOf(data.graphs)),
      h("div", {},
        h("h2", { id: "item-id" }, id),
        h("p", { class: "question" }, first.question || ""),
        h("p", {}, h("span", { class: "muted" }, "reference: "), h("b", {}, first.reference ?? "–")))),
    h("div", { class: "graph-cols", style: `grid-template-columns: repeat(${data.graphs.length}, minmax(0, 1fr))` },
      data.graphs.map(graphColumn)));
}

async function route() {
  const { path, params } = hashParams();
  document.body.dataset.ready = "";
  try {
    if (path === "/item") { if (!run) await loadRun(); await showItem(params); }
    else await showRun(params);
    window.scrollTo(0, 0);
  } catch (e) {
    app.replaceChildren(h("p", { class: "error" }, String(e.message || e)));
  }
  document.body.dataset.ready = path;
}

window.addEventListener("hashchange", route);
route();
