"""`stagewise compare`'s report: one row per graph, from the files each run wrote.

Read from DIR/<graph>/results.jsonl and traces.jsonl only, so a report can be rebuilt any time.
Cost per item is the uncached cost (what the graph costs on its own), since graphs run later in a
comparison replay requests that earlier ones already paid for. Accuracy is over every row with a
reference answer, error rows counted as wrong.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

COLUMNS = [("graph", "graph"), ("items", "items"), ("ok", "ok"), ("errors", "errors"), ("accuracy", "accuracy"),
           ("calls_per_item", "calls/item"), ("prompt_tokens_per_item", "prompt tok/item"),
           ("completion_tokens_per_item", "completion tok/item"), ("cost_per_item_usd", "$/item"),
           ("latency_p50_s", "p50 s"), ("latency_p95_s", "p95 s"), ("judge_fallback_rate", "judge fallback")]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def graph_stats(run_dir: Path, name: str) -> dict[str, Any]:
    rows = _jsonl(run_dir / "results.jsonl")
    verdicts = [t for t in _jsonl(run_dir / "traces.jsonl") if t.get("event") == "judge.verdict"]
    n = max(1, len(rows))
    # an error row with a reference answer counts as wrong: a graph that fails on hard items must not
    # look better for it
    scored = [bool(r.get("correct")) for r in rows
              if r.get("correct") is not None or (r.get("status") != "ok" and r.get("reference") is not None)]
    latencies = sorted(r["latency_s"] for r in rows if r.get("status") == "ok")
    usage = lambda key: sum((r.get("usage") or {}).get(key, 0) for r in rows) / n  # noqa: E731
    judged = [v for v in verdicts if v.get("parse") != "forfeit"]
    return {
        "graph": name, "items": len(rows), "ok": sum(r.get("status") == "ok" for r in rows),
        "errors": sum(r.get("status") != "ok" for r in rows),
        "accuracy": round(sum(scored) / len(scored), 4) if scored else None,
        "calls_per_item": round(usage("calls"), 2),
        "prompt_tokens_per_item": round(usage("prompt_tokens"), 1),
        "completion_tokens_per_item": round(usage("completion_tokens"), 1),
        "cost_per_item_usd": round(usage("cost_uncached_usd"), 6),
        "latency_p50_s": _round(_percentile(latencies, 50)), "latency_p95_s": _round(_percentile(latencies, 95)),
        "judge_fallback_rate": round(sum(v.get("parse") == "fallback" for v in judged) / len(judged), 4)
        if judged else None,
        "cache_hits_per_item": round(usage("cache_hits"), 2),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def markdown_table(stats: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(label for _, label in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join("–" if s[k] is None else str(s[k]) for k, _ in COLUMNS) + " |" for s in stats]
    return "\n".join([head, rule, *body])


def write_png(stats: list[dict[str, Any]], path: Path) -> None:
    """Three small bar panels (accuracy, calls/item, p50 latency), drawn with Pillow."""
    from PIL import Image, ImageDraw

    panels = [("accuracy", "accuracy"), ("calls_per_item", "calls / item"), ("latency_p50_s", "p50 latency (s)")]
    w, h, pad = 300, 220, 30
    img = Image.new("RGB", (w * len(panels), h), "white")
    draw = ImageDraw.Draw(img)
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    for p, (key, title) in enumerate(panels):
        x0 = p * w
        draw.text((x0 + pad, 8), title, fill="black")
        values = [s[key] or 0 for s in stats]
        top = 1.0 if key == "accuracy" else (max(values) or 1)
        bar_w = (w - 2 * pad) / max(1, len(stats))
        for i, (s, v) in enumerate(zip(stats, values)):
            bx = x0 + pad + i * bar_w
            bh = (h - 70) * v / top
            draw.rectangle([bx + 4, h - 40 - bh, bx + bar_w - 4, h - 40], fill=colours[i % len(colours)])
            draw.text((bx + 4, h - 38), s["graph"][:12], fill="black")
            draw.text((bx + 4, h - 54 - bh), f"{v:g}", fill="black")
    img.save(path)


def write_report(out: Path, names: list[str]) -> dict[str, Any]:
    stats = [graph_stats(out / name, name) for name in names]
    table = markdown_table(stats)
    (out / "report.json").write_text(json.dumps({"graphs": stats}, indent=2) + "\n")
    (out / "report.md").write_text("# stagewise compare\n\n" + table + "\n\nCost per item is uncached "
                                   "(what each graph costs alone); latency is per item, end to end; "
                                   "accuracy counts error rows as wrong.\n")
    write_png(stats, out / "report.png")
    return {"graphs": stats, "markdown": table}
