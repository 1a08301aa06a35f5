"""A seeded benchmark of any size: ITEMS.jsonl + PNG images, in the stagewise ITEMS format.

Item i of seed s depends on (s, i) only, so a benchmark of 10 items is the first 10 of one of 1000.
Benchmarks draw "test" charts (charts.split_of), training sets "train" charts: never the same chart.
Each line: id, question, image (relative to the JSONL's folder), answer, choices (multiple choice
only), plus `type` and `chart` (the data it was drawn from; extra fields the engine keeps).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from chartbench.charts import Chart, random_chart, render
from chartbench.questions import TYPES, Question, ask, chance, kind_of


@dataclass(frozen=True)
class BenchItem:
    id: str
    chart: Chart
    question: Question

    @property
    def chance(self) -> float:
        return chance(self.question.qtype, self.chart)

    def row(self, image: str) -> dict:
        q = self.question
        row = {"id": self.id, "question": q.text, "image": image, "answer": q.answer}
        if q.choices:
            row["choices"] = list(q.choices)
        row["type"] = q.qtype
        row["chart"] = self.chart.as_dict()
        row["params"] = q.params
        return row


def make_item(seed: int, i: int, types: tuple[str, ...] = TYPES, split: str = "test") -> BenchItem:
    rng = random.Random(f"chartbench:{seed}:{i}")
    qtype = rng.choice(types)
    chart = random_chart(rng, kind_of(qtype), split)
    q = ask(chart, qtype, rng)
    return BenchItem(f"{seed}-{i:05d}-{qtype}", chart, q)


def make_items(n: int, seed: int = 0, types: tuple[str, ...] = TYPES, split: str = "test") -> list[BenchItem]:
    return [make_item(seed, i, types, split) for i in range(n)]


def items_text(items: list[BenchItem]) -> str:
    """The ITEMS.jsonl text for `items`, images under images/<id>.png."""
    return "".join(json.dumps(item.row(f"images/{item.id}.png")) + "\n" for item in items)


def write_items(out, n: int, seed: int = 0, types: tuple[str, ...] = TYPES) -> Path:
    """Write OUT/ITEMS.jsonl and OUT/images/*.png; return the ITEMS path."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    items = make_items(n, seed, types)
    for item in items:
        render(item.chart).save(out / "images" / f"{item.id}.png", optimize=True)
    path = out / "ITEMS.jsonl"
    path.write_text(items_text(items), encoding="utf-8")
    return path


def from_row(row: dict) -> BenchItem:
    """The BenchItem an ITEMS.jsonl row was written from."""
    chart = Chart.from_dict(row["chart"])
    q = Question(row["type"], row["question"], str(row["answer"]),
                 tuple(row["choices"]) if row.get("choices") else None, dict(row.get("params") or {}))
    return BenchItem(str(row["id"]), chart, q)


def read_items(path) -> list[BenchItem]:
    """The benchmark items of an ITEMS.jsonl; a line that is not one (bad JSON, not a chart item) is
    skipped, as the run made it an error row."""
    items = []
    for line in Path(path).read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            items.append(from_row(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            continue
    return items
