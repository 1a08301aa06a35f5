"""Can the model find a value it has already written? The lookup behind a search that cannot pay.

bar_value asks for a bar by colour, line_value for a point by position; in the teacher's answer the
reasoning takes that value from the (correct) caption. This gives the model the teacher's summary and
caption and lets it write the reasoning (greedy); the value it ends on is what it found. So the caption
is right by construction and only the lookup is measured. It then asks again with the caption's values
shuffled (the picture unchanged): a model that reads its caption names the caption's value, one that
reads the picture names the picture's. A judge that decides by redoing a lookup the model cannot do is
no better than the generator it judges (stagewise/model/TRAINING.md).
"""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import replace

from chartbench.bench import make_items
from chartbench.charts import render
from chartbench.generation import generate, load
from chartbench.teacher import format_trace, trace
from chartbench.trainset import full_prompt

LOOKUPS = {"bar_value": "colour", "line_value": "position"}  # question type -> what names the value


def _prefix(full: str) -> str:
    """The teacher's answer up to where its reasoning starts."""
    return full[:full.index("<REASONING>") + len("<REASONING>")]


def found_value(reasoning: str) -> str:
    """The value a written reasoning ends on (its last number before the tag closes), or ""."""
    numbers = re.findall(r"\d+", reasoning.split("</REASONING>")[0])
    return numbers[-1] if numbers else ""


def lookup_bench(model_dir, n: int = 150, seed: int = 99, batch: int = 32) -> dict[str, dict]:
    """{question type: {items, by, right, chance, follows_caption, follows_image}} (shares of items)."""
    model, proc = load(model_dir)
    rng = random.Random(f"lookup:{seed}")
    result = {}
    for qtype, by in LOOKUPS.items():
        items = make_items(n, seed, types=(qtype,))  # test-split charts, values distinct
        shuffled = []
        for item in items:
            chart, i = item.chart, item.question.params["i"]
            values = list(chart.values)
            while values[i] == chart.values[i]:
                rng.shuffle(values)
            shuffled.append(replace(chart, values=tuple(values)))
        pairs = [(item, c) for item, s in zip(items, shuffled) for c in (item.chart, s)]  # as drawn, shuffled
        starts = [_prefix(format_trace(trace(c, item.question))) for item, c in pairs]
        pictures = [render(item.chart) for item, _ in pairs]
        prompts = [full_prompt(item) for item, _ in pairs]
        said = [found_value(r) for r in generate(model, proc, prompts, pictures, batch=batch, starts=starts,
                                                   max_new_tokens=64, do_sample=False)]
        t = Counter()
        for k, item in enumerate(items):
            chart, i = item.chart, item.question.params["i"]
            t["right"] += said[2 * k] == str(chart.values[i])
            t["caption"] += said[2 * k + 1] == str(shuffled[k].values[i])
            t["image"] += said[2 * k + 1] == str(chart.values[i])
            t["chance"] += 1 / chart.n  # a uniform pick among the values the caption holds
        result[qtype] = {"items": n, "by": by, "right": round(t["right"] / n, 3),
                         "chance": round(t["chance"] / n, 3), "follows_caption": round(t["caption"] / n, 3),
                         "follows_image": round(t["image"] / n, 3)}
    return result
