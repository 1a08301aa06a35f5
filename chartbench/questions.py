"""Question types over a chart, each with an exact answer and the chance of guessing it.

A question is drawn for a chart kind; `answer` is computed from the chart's data, never read back
from the picture. Multiple-choice questions carry `choices` and a letter answer (the stagewise
ITEMS format; the engine letters the options A, B, ...). `chance` is what a uniform guess over the
answers the question allows would score (1/#bars for "which colour", 1/8 for a value, ...).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from chartbench.charts import MAX_VALUE, Chart

ORDINALS = ("first", "second", "third", "fourth")
LETTERS = "ABCDEFGH"

BAR_TYPES = ("bar_tallest", "bar_shortest", "bar_value", "bar_difference", "bar_count", "bar_choice")
LINE_TYPES = ("line_value", "line_peak", "line_range", "line_count", "line_trend")
TYPES = BAR_TYPES + LINE_TYPES


@dataclass(frozen=True)
class Question:
    qtype: str
    text: str
    answer: str
    choices: tuple[str, ...] | None = None
    params: dict = field(default_factory=dict)  # what the teacher needs (colours, positions, ...)


def kind_of(qtype: str) -> str:
    return qtype.split("_", 1)[0]


def _argmax(values) -> int:
    return max(range(len(values)), key=lambda i: values[i])


def _argmin(values) -> int:
    return min(range(len(values)), key=lambda i: values[i])


def ask(chart: Chart, qtype: str, rng: random.Random) -> Question:
    """A `qtype` question about `chart`, with its exact answer."""
    if qtype not in TYPES:
        raise ValueError(f"unknown question type {qtype!r}")
    if kind_of(qtype) != chart.kind:
        raise ValueError(f"{qtype} needs a {kind_of(qtype)} chart, not a {chart.kind} chart")
    c, v = chart.colours, chart.values
    if qtype == "bar_tallest":
        return Question(qtype, "Which colour bar is the tallest?", c[_argmax(v)])
    if qtype == "bar_shortest":
        return Question(qtype, "Which colour bar is the shortest?", c[_argmin(v)])
    if qtype == "bar_value":
        i = rng.randrange(chart.n)
        return Question(qtype, f"What is the value of the {c[i]} bar?", str(v[i]), params={"i": i})
    if qtype == "bar_difference":
        i, j = rng.sample(range(chart.n), 2)
        if v[i] < v[j]:
            i, j = j, i
        return Question(qtype, f"How much taller is the {c[i]} bar than the {c[j]} bar?", str(v[i] - v[j]),
                        params={"i": i, "j": j})
    if qtype == "bar_count":
        return Question(qtype, "How many bars are in the chart?", str(chart.n))
    if qtype == "bar_choice":
        most = rng.choice(("tallest", "shortest"))
        options = list(c)
        rng.shuffle(options)
        target = c[_argmax(v) if most == "tallest" else _argmin(v)]
        return Question(qtype, f"Which colour bar is the {most}?", LETTERS[options.index(target)],
                        tuple(options), params={"most": most})
    if qtype == "line_value":
        i = rng.randrange(chart.n)
        return Question(qtype, f"What is the value of the {ORDINALS[i]} point of the line?", str(v[i]),
                        params={"i": i})
    if qtype == "line_peak":
        return Question(qtype, "Which point of the line is the highest? Answer with its position from the "
                        "left (1 for the first point).", str(_argmax(v) + 1))
    if qtype == "line_range":
        return Question(qtype, "What is the difference between the highest and the lowest point of the line?",
                        str(max(v) - min(v)))
    if qtype == "line_count":
        return Question(qtype, "How many points does the line have?", str(chart.n))
    # line_trend
    i = rng.randrange(chart.n - 1)
    options = ["up", "down"]
    rng.shuffle(options)
    way = "up" if v[i + 1] > v[i] else "down"
    return Question(qtype, f"Does the line go up or down from the {ORDINALS[i]} point to the "
                    f"{ORDINALS[i + 1]} point?", LETTERS[options.index(way)], tuple(options), params={"i": i})


def chance(qtype: str, chart: Chart) -> float:
    """Accuracy of a uniform guess among the answers this question allows."""
    if qtype in ("bar_tallest", "bar_shortest", "bar_choice", "line_peak"):
        return 1 / chart.n
    if qtype in ("bar_value", "line_value"):
        return 1 / MAX_VALUE
    if qtype in ("bar_difference", "line_range"):
        return 1 / (MAX_VALUE - 1)
    if qtype == "bar_count":
        return 1 / 3  # 2, 3 or 4 bars
    return 1 / 2      # line_count (3 or 4 points), line_trend (up or down)
