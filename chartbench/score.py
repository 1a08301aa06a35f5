"""Accuracy per question type of one or more runs, next to chance, from the files runs write."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from chartbench.bench import read_items


def rows_by_id(results: Path) -> dict[str, dict]:
    """A results.jsonl's rows by id (an unreadable line is skipped)."""
    out = {}
    for line in results.read_bytes().split(b"\n"):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        out[str(r.get("id"))] = r
    return out


def score_run(results, items) -> dict[str, dict]:
    """{type: {"n", "correct", "accuracy", "chance"}} plus "all"; a missing or error row counts wrong."""
    rows = rows_by_id(Path(results))
    acc: dict[str, list] = defaultdict(lambda: [0, 0, 0.0])
    for item in read_items(items):
        for key in (item.question.qtype, "all"):
            a = acc[key]
            a[0] += 1
            a[1] += bool((rows.get(item.id) or {}).get("correct"))
            a[2] += item.chance
    return {k: {"n": n, "correct": c, "accuracy": round(c / n, 3), "chance": round(ch / n, 3)}
            for k, (n, c, ch) in sorted(acc.items(), key=lambda kv: (kv[0] == "all", kv[0]))}


def run_dirs(run) -> list[Path]:
    """[DIR] for a run DIR, or a compare DIR's graph sub-folders (each with a results.jsonl)."""
    run = Path(run)
    if (run / "results.jsonl").is_file():
        return [run]
    return [d for d in sorted(run.iterdir()) if (d / "results.jsonl").is_file()]


def score_runs(run, items) -> dict[str, dict[str, dict]]:
    """{graph or run name: score_run(...)} for a run DIR or a compare DIR of graph sub-folders."""
    return {d.name: score_run(d / "results.jsonl", items) for d in run_dirs(run)}


def table(scores: dict[str, dict[str, dict]], order: list[str] | None = None) -> str:
    """Markdown: one row per question type, one accuracy column per run, then chance."""
    names = [n for n in (order or list(scores)) if n in scores]
    types = list(next(iter(scores.values()))) if scores else []
    head = "| question type | n | " + " | ".join(names) + " | chance |"
    lines = [head, "|" + "---|" * (len(names) + 3)]
    for t in types:
        first = scores[names[0]][t]
        cells = " | ".join(f"{scores[n][t]['accuracy']:.2f}" for n in names)
        lines.append(f"| {t} | {first['n']} | {cells} | {first['chance']:.2f} |")
    return "\n".join(lines)
