"""Can the model find a value it has already written? The lookup behind a search that cannot pay.

bar_value asks for a bar by colour, line_value for a point by position; in the teacher's answer the
reasoning copies that value out of the (correct) caption. This feeds the model the teacher's answer up
to the value in the reasoning ("... the red bar reaches ") and reads its greedy next token, so the
caption is right by construction and only the lookup is measured. It then asks again with the
caption's values shuffled (the picture unchanged): a model that reads its caption names the
caption's value, one that reads the picture names the picture's. A judge that decides by redoing a
lookup the model cannot do is no better than the generator it judges (stagewise/model/TRAINING.md).
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

from chartbench.bench import make_items
from chartbench.charts import render
from chartbench.generation import chat_text, load
from chartbench.teacher import format_trace, trace
from chartbench.trainset import full_prompt

LOOKUPS = {"bar_value": "colour", "line_value": "position"}  # question type -> what names the value


def _prefix(full: str, answer: str) -> str:
    """The teacher's answer up to the looked-up value at the end of its reasoning."""
    end = full.index("</REASONING>")
    return full[:full.rindex(f" {answer}.", 0, end) + 1]


def lookup_bench(model_dir, n: int = 150, seed: int = 99) -> dict[str, dict]:
    """{question type: {items, by, right, chance, follows_caption, follows_image}} (shares of items)."""
    import torch

    model, proc = load(model_dir)
    rng = random.Random(f"lookup:{seed}")

    def next_token(item, picture, chart_written) -> str:
        written = format_trace(trace(chart_written, item.question))
        answer = str(chart_written.values[item.question.params["i"]])
        inputs = proc(images=[[picture]], text=[chat_text(proc, full_prompt(item), True) + _prefix(written, answer)],
                      add_special_tokens=False, return_tensors="pt").to(model.device)
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1]
        return proc.tokenizer.decode([int(logits.argmax())]).strip()

    result = {}
    for qtype, by in LOOKUPS.items():
        t = Counter()
        for item in make_items(n, seed, types=(qtype,)):  # test-split charts, values distinct
            chart, i = item.chart, item.question.params["i"]
            picture = render(chart)
            t["right"] += next_token(item, picture, chart) == str(chart.values[i])
            shuffled = list(chart.values)
            while shuffled[i] == chart.values[i]:
                rng.shuffle(shuffled)
            said = next_token(item, picture, replace(chart, values=tuple(shuffled)))
            t["caption"] += said == str(shuffled[i])
            t["image"] += said == str(chart.values[i])
            t["chance"] += 1 / chart.n  # a uniform pick among the values the caption holds
        result[qtype] = {"items": n, "by": by, "right": round(t["right"] / n, 3),
                         "chance": round(t["chance"] / n, 3), "follows_caption": round(t["caption"] / n, 3),
                         "follows_image": round(t["image"] / n, 3)}
    return result
