"""`stagewise compare`'s report: one row per graph, from the files each run wrote.

Read from DIR/<graph>/results.jsonl and traces.jsonl only, so a report can be rebuilt any time.
Cost per item is the uncached cost (what the graph costs on its own), since graphs run later in a
comparison replay requests that earlier ones already paid for. Accuracy is over every row with a
reference answer, error rows counted as wrong.
"""
from __future__ import annotations

import datetime
import json
import statistics
from pathlib import Path
from typing import Any

from search.judge_quality import judge_report, references

COLUMNS = [("graph", "graph"), ("items", "items"), ("ok", "ok"), ("errors", "errors"), ("accuracy", "accuracy"),
           ("calls_per_item", "calls/item"), ("prompt_tokens_per_item", "prompt tok/item"),
           ("completion_tokens_per_item", "completion tok/item"), ("cost_per_item_usd", "$/item"),
           ("latency_p50_s", "p50 s"), ("latency_p95_s", "p95 s"), ("judge_fallback_rate", "judge fallback"),
           ("judge_second_rate", "judge picks 2nd"), ("judge_agreement", "orders agree"),
           ("judge_accuracy", "judge acc (decidable)")]
JUDGE_COLUMNS = [("graph", "graph"), ("stage", "judge"), ("verdicts", "verdicts"), ("second_rate", "picks 2nd"),
                 ("agreement", "orders agree"), ("fallback_rate", "fallback"), ("decidable", "decidable pairs"),
                 ("accuracy", "accuracy on decidable")]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_bytes().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # UnicodeDecodeError included
            continue
    return rows


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def graph_stats(run_dir: Path, name: str, refs: dict[str, tuple[str, list[str] | None]] | None = None
                ) -> dict[str, Any]:
    """One graph's row; with `refs` (judge_quality.references) the judge's quality too (`judge`: per stage)."""
    rows = _jsonl(run_dir / "results.jsonl")
    n = max(1, len(rows))
    # an error row with a reference answer counts as wrong: a graph that fails on hard items must not
    # look better for it
    scored = [bool(r.get("correct")) for r in rows
              if r.get("correct") is not None or (r.get("status") != "ok" and r.get("reference") is not None)]
    latencies = sorted(r["latency_s"] for r in rows if r.get("status") == "ok")
    usage = lambda key: sum((r.get("usage") or {}).get(key, 0) for r in rows) / n  # noqa: E731
    return {
        "graph": name, "items": len(rows), "ok": sum(r.get("status") == "ok" for r in rows),
        "errors": sum(r.get("status") != "ok" for r in rows),
        "accuracy": round(sum(scored) / len(scored), 4) if scored else None,
        "calls_per_item": round(usage("calls"), 2),
        "prompt_tokens_per_item": round(usage("prompt_tokens"), 1),
        "completion_tokens_per_item": round(usage("completion_tokens"), 1),
        "cost_per_item_usd": round(usage("cost_uncached_usd"), 6),
        "latency_p50_s": _round(_percentile(latencies, 50)), "latency_p95_s": _round(_percentile(latencies, 95)),
        "cache_hits_per_item": round(usage("cache_hits"), 2),
        **_judge_fields(run_dir, refs),
    }


def _judge_fields(run_dir: Path, refs: dict[str, tuple[str, list[str] | None]] | None) -> dict[str, Any]:
    """The judge's figures over every stage (the same as summary.json's `judge.all`) and per stage."""
    report = judge_report(_jsonl(run_dir / "traces.jsonl"), refs or {})
    every = report["all"]
    return {"judge_fallback_rate": every["fallback_rate"], "judge_second_rate": every["second_rate"],
            "judge_agreement": every["agreement"], "judge_accuracy": every["accuracy"],
            "judge_decidable": every["decidable"], "judge": report["stages"]}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def markdown_table(stats: list[dict[str, Any]], columns: list[tuple[str, str]] = COLUMNS) -> str:
    head = "| " + " | ".join(label for _, label in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join("–" if s.get(k) is None else str(s[k]) for k, _ in columns) + " |" for s in stats]
    return "\n".join([head, rule, *body])


def judge_table(stats: list[dict[str, Any]]) -> str:
    """The judge's quality per graph and stage (search/judge_quality.py); "" when no graph judged."""
    rows = [{"graph": s["graph"], "stage": stage, **figures}
            for s in stats for stage, figures in (s.get("judge") or {}).items()]
    return markdown_table(rows, JUDGE_COLUMNS) if rows else ""


def chance_accuracy(items_path: Path | None) -> float | None:
    """Accuracy of a random pick: 1/len(choices) averaged over items that list choices; None if none do."""
    if items_path is None or not Path(items_path).is_file():
        return None
    odds = [1 / len(r["choices"]) for r in _jsonl(Path(items_path))
            if isinstance(r, dict) and isinstance(r.get("choices"), list) and r["choices"]]
    return round(sum(odds) / len(odds), 4) if odds else None


COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def write_png(stats: list[dict[str, Any]], path: Path, head: dict[str, Any] | None = None) -> None:
    """A picture readable on its own: a title (items, model, N, date), accuracy per graph with the
    chance line, accuracy against cost per item (tokens when nothing was paid) — the figure that says
    which graph to use — and p50/p95 latency. Pillow only."""
    from PIL import Image, ImageDraw

    head = head or {}
    title_font, font, small = _font(22), _font(15), _font(13)
    w, panel_h, top = 1500, 420, 90
    img = Image.new("RGB", (w, top + panel_h + 30 + 18 * ((len(stats) + 1) // 2)), "white")
    d = ImageDraw.Draw(img)
    items = max((s["items"] for s in stats), default=0)
    title = f"stagewise compare: {len(stats)} graph{'' if len(stats) == 1 else 's'} on {items} items"
    facts = [f"model {head['model']}" if head.get("model") else None, f"N = {head['n']}" if head.get("n") else None,
             head.get("date")]
    d.text((20, 14), title, fill="black", font=title_font)
    d.text((20, 48), " · ".join(f for f in facts if f), fill=(70, 70, 70), font=font)
    colour = {s["graph"]: COLOURS[i % len(COLOURS)] for i, s in enumerate(stats)}
    pw = w // 3

    def frame(x0: int, label: str) -> tuple[int, int, int, int]:
        d.text((x0 + 20, top), label, fill="black", font=font)
        box = (x0 + 60, top + 30, x0 + pw - 20, top + panel_h - 60)
        d.line([(box[0], box[1]), (box[0], box[3]), (box[2], box[3])], fill="black")
        return box

    def bars(x0: int, label: str, values: list[float | None], top_value: float, fmt: str) -> tuple:
        box = frame(x0, label)
        slot = (box[2] - box[0]) / max(1, len(stats))
        for i, (s, v) in enumerate(zip(stats, values)):
            bx = box[0] + i * slot
            if v is not None:
                bh = (box[3] - box[1]) * v / top_value
                d.rectangle([bx + 8, box[3] - bh, bx + slot - 8, box[3]], fill=colour[s["graph"]])
                d.text((bx + 10, box[3] - bh - 18), format(v, fmt), fill="black", font=small)
            d.text((bx + 6, box[3] + 6 + 16 * (i % 2)), s["graph"], fill="black", font=small)  # whole names
        return box

    # 1: accuracy, with the chance line
    acc = [s["accuracy"] for s in stats]
    box = bars(0, "accuracy (error rows count as wrong)", acc, 1.0, ".2f")
    for frac in (0.0, 0.5, 1.0):
        y = box[3] - (box[3] - box[1]) * frac
        d.text((box[0] - 36, y - 8), f"{frac:.1f}", fill="black", font=small)
    chance = head.get("chance")
    if chance is not None:
        y = box[3] - (box[3] - box[1]) * chance
        for x in range(int(box[0]), int(box[2]), 12):
            d.line([(x, y), (x + 6, y)], fill=(200, 0, 0), width=2)
        d.text((box[2] - 120, y - 18), f"chance {chance:.2f}", fill=(200, 0, 0), font=small)

    # 2: accuracy against cost (tokens when nothing was paid) per item
    paid = any((s["cost_per_item_usd"] or 0) > 0 for s in stats)
    xs = [s["cost_per_item_usd"] if paid else s["prompt_tokens_per_item"] + s["completion_tokens_per_item"]
          for s in stats]
    box = frame(pw, "accuracy vs " + ("cost per item ($, uncached)" if paid else "tokens per item"))
    x_max = max(xs, default=0) or 1
    for s, x in zip(stats, xs):
        if s["accuracy"] is None:
            continue
        px = box[0] + (box[2] - box[0] - 20) * x / x_max + 10
        py = box[3] - (box[3] - box[1]) * s["accuracy"]
        d.ellipse([px - 7, py - 7, px + 7, py + 7], outline="black", fill=colour[s["graph"]])
    for i, (s, x) in enumerate(zip(stats, xs)):  # a key under the axis: points of equal value overlap
        kx, ky = box[0] + (i % 2) * (pw // 2 - 30), box[3] + 26 + (i // 2) * 18
        d.ellipse([kx, ky + 3, kx + 10, ky + 13], fill=colour[s["graph"]])
        acc_text = "–" if s["accuracy"] is None else f"{s['accuracy']:.2f}"
        d.text((kx + 14, ky), f"{s['graph']}: {acc_text} @ {x:.4g}", fill="black", font=small)
    if chance is not None:
        y = box[3] - (box[3] - box[1]) * chance
        for x in range(int(box[0]), int(box[2]), 12):
            d.line([(x, y), (x + 6, y)], fill=(200, 0, 0), width=2)
    d.text((box[0], box[3] + 6), "0", fill="black", font=small)
    d.text((box[2] - 90, box[3] + 6), format(x_max, ".4g" if paid else ".0f"), fill="black", font=small)
    d.text((box[0] - 36, box[1] - 8), "1.0", fill="black", font=small)

    # 3: latency per item
    p50 = [s["latency_p50_s"] for s in stats]
    p95 = [s["latency_p95_s"] for s in stats]
    box = bars(2 * pw, "latency per item, p50 (bar) and p95 (tick), s", p50,
               max([v for v in p50 + p95 if v is not None], default=0) or 1, ".2f")
    top_value = max([v for v in p50 + p95 if v is not None], default=0) or 1
    slot = (box[2] - box[0]) / max(1, len(stats))
    for i, v in enumerate(p95):
        if v is not None:
            y = box[3] - (box[3] - box[1]) * v / top_value
            d.line([(box[0] + i * slot + 8, y), (box[0] + (i + 1) * slot - 8, y)], fill="black", width=3)
    img.save(path)


def write_report(out: Path, names: list[str], *, model: str | None = None, n: int | None = None,
                 items_path: Path | None = None) -> dict[str, Any]:
    refs = references(items_path)
    stats = [graph_stats(out / name, name, refs) for name in names]
    table = markdown_table(stats)
    judges = judge_table(stats)
    if judges:
        table += ("\n\nThe judge, per stage (picks 2nd: share of verdicts naming the response shown second; "
                  "orders agree: --judge-order both; accuracy on pairs of a right and a wrong final answer):\n\n"
                  + judges)
    head = {"items": max((s["items"] for s in stats), default=0), "model": model, "n": n,
            "date": datetime.date.today().isoformat(), "chance": chance_accuracy(items_path)}
    (out / "report.json").write_text(json.dumps({**head, "graphs": stats}, indent=2) + "\n")
    (out / "report.md").write_text("# stagewise compare\n\n" + table + "\n\nCost per item is uncached "
                                   "(what each graph costs alone); latency is per item, end to end; "
                                   "accuracy counts error rows as wrong.\n")
    write_png(stats, out / "report.png", head)
    return {"graphs": stats, "markdown": table}
