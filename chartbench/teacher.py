"""The programmatic teacher: the four-stage answer a perfect model writes for an item.

It plays GPT-4o's part in LLaVA-CoT's data generation, but from the chart's data, so every trace is
correct by construction: SUMMARY plans from the question type, CAPTION transcribes the chart (every
bar or point, left to right, with its value), REASONING works the answer out from the caption's
numbers only, CONCLUSION states it as the benchmark scores it. `solve` also makes the wrong
reasonings the judge examples need (a misread value, an arithmetic slip, the wrong bar picked).
"""
from __future__ import annotations

from dataclasses import dataclass

from chartbench.charts import Chart
from chartbench.questions import LETTERS, ORDINALS, Question

STAGE_TAGS = ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION")
SCANNED = ("bar_value", "bar_difference")  # the types whose reasoning finds bars by colour (`scan`)

SUMMARIES = {
    "bar_tallest": "I will read the height of every bar, then give the colour of the tallest one.",
    "bar_shortest": "I will read the height of every bar, then give the colour of the shortest one.",
    "bar_value": "I will find the {a} bar and read its value against the grid.",
    "bar_difference": "I will read the values of the {a} bar and the {b} bar, then subtract them.",
    "bar_count": "I will count the bars from left to right.",
    "bar_choice": "I will read the height of every bar, find the {most} one, then match it to an option.",
    "line_value": "I will find the {a} point of the line and read its value against the grid.",
    "line_peak": "I will read the value of every point, then give the position of the highest one.",
    "line_range": "I will read the value of every point, then subtract the lowest from the highest.",
    "line_count": "I will count the points of the line from left to right.",
    "line_trend": "I will read the {a} and {b} points, compare them, then match the direction to an option.",
}


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def summary(chart: Chart, q: Question) -> str:
    p = q.params
    a = b = ""
    if q.qtype == "bar_value":
        a = chart.colours[p["i"]]
    elif q.qtype == "bar_difference":
        a, b = chart.colours[p["i"]], chart.colours[p["j"]]
    elif q.qtype == "line_value":
        a = ORDINALS[p["i"]]
    elif q.qtype == "line_trend":
        a, b = ORDINALS[p["i"]], ORDINALS[p["i"] + 1]
    return SUMMARIES[q.qtype].format(a=a, b=b, most=p.get("most", ""))


def caption(chart: Chart) -> str:
    """Every bar or point, numbered from the left, with its value, then how many there are. The
    number before each reading tells the model which column of the picture to look at, and the
    count comes last (it is the last number read), which a small model learns far sooner."""
    if chart.kind == "bar":
        items = " ".join(f"Bar {j + 1} is {c} at {v}." for j, (c, v) in enumerate(zip(chart.colours, chart.values)))
        return f"A bar chart. {items} There are {chart.n} bars."
    items = " ".join(f"Point {j + 1} is at {v}." for j, v in enumerate(chart.values))
    return f"A {chart.line_colour} line chart. {items} There are {chart.n} points."


@dataclass(frozen=True)
class Solution:
    reasoning: str
    answer: str
    key: str  # the decisive step, in a few words (a judge's reason); for a bar found by colour, the scan


def _pick(values, best: int, slip: bool) -> int:
    """The index a reasoning picks: `best`, or with a slip the next best one."""
    if not slip:
        return best
    ranked = sorted(range(len(values)), key=lambda i: values[i], reverse=values[best] == max(values))
    return ranked[1]


def scan(chart: Chart, wanted: set[int], last: int) -> tuple[str, list[int]]:
    """Bars 1..last+1 in order, each named by position and colour, "yes" with its value where it is
    wanted, else "no"; and the wanted values, in that order. Finding a bar by its colour is a lookup a
    small text tower learns very slowly; walking the bars by position and asking of each whether it is
    the one turns it into copies by position and a same-word check, which it learns quickly
    (stagewise/model/TRAINING.md)."""
    steps, found = [], []
    for j in range(last + 1):
        if j in wanted:
            steps.append(f"Bar {j + 1} is {chart.colours[j]}, yes, at {chart.values[j]}")
            found.append(chart.values[j])
        else:
            steps.append(f"Bar {j + 1} is {chart.colours[j]}, no")
    return ". ".join(steps), found


def solve(chart: Chart, q: Question, slip: bool = False) -> Solution:
    """The reasoning from `chart`'s numbers (pass a misread chart for a misread), its answer, and its
    key step. `slip=True` makes the one mistake the type allows after reading: an arithmetic error
    (+1), the second-best bar or point picked, a neighbour of the asked bar taken for it, a miscount,
    the wrong direction."""
    c, v, p, t = chart.colours, chart.values, q.params, q.qtype
    listing = _join([str(x) for x in v])
    if t in ("bar_tallest", "bar_shortest", "bar_choice"):
        most = "tallest" if t == "bar_tallest" else "shortest" if t == "bar_shortest" else p["most"]
        best = max(range(chart.n), key=lambda i: v[i]) if most == "tallest" else min(range(chart.n), key=lambda i: v[i])
        i = _pick(v, best, slip)
        word = "largest" if most == "tallest" else "smallest"
        key = f"the {word} value is {v[i]}, from the {c[i]} bar"
        text = f"Comparing {listing}, {key}."
        if t != "bar_choice":
            return Solution(text, c[i], key)
        letter = LETTERS[q.choices.index(c[i])] if c[i] in q.choices else "A"
        return Solution(f"{text} {c[i].capitalize()} is option {letter}.", letter, f"{key}, option {letter}")
    if t == "bar_value":
        i = p["i"]
        k = i if not slip else i + 1 if i + 1 < chart.n else i - 1  # the slip: stopping at a neighbour
        key, (val,) = scan(chart, {k}, last=k)
        return Solution(f"{key}. So the {c[i]} bar reaches {val}.", str(val), key)
    if t == "bar_difference":
        key, found = scan(chart, {p["i"], p["j"]}, last=max(p["i"], p["j"]))
        hi, lo = max(found), min(found)
        d = hi - lo + (1 if slip else 0)
        return Solution(f"{key}. So the difference is {hi} - {lo} = {d}.", str(d), f"{key}, so {hi} - {lo} = {d}")
    if t == "line_range":
        hi, lo = max(v), min(v)
        d = hi - lo + (1 if slip else 0)
        key = f"{hi} - {lo} = {d}"
        return Solution(f"The highest point is {hi} and the lowest is {lo}, so the difference is {key}.", str(d), key)
    if t in ("bar_count", "line_count"):
        n = chart.n + (1 if slip else 0)
        if t == "bar_count":
            key = f"the bars {_join(list(c))} make {n} bars"
        else:
            key = f"the values {listing} make {n} points"
        return Solution(f"Counting from left to right, {key}.", str(n), key)
    if t == "line_value":
        i = p["i"]
        val = v[i] + (1 if slip else 0)
        key = f"the {ORDINALS[i]} point is at {val}"
        return Solution(f"In the caption, {key}.", str(val), key)
    if t == "line_peak":
        i = _pick(v, max(range(chart.n), key=lambda k: v[k]), slip)
        key = f"the largest value is {v[i]}, at point {i + 1}"
        return Solution(f"Comparing {listing}, {key}.", str(i + 1), key)
    # line_trend
    i = p["i"]
    up = (v[i + 1] > v[i]) != slip
    way = "up" if up else "down"
    rel = "more" if up else "less"
    letter = LETTERS[q.choices.index(way)]
    key = f"{v[i + 1]} is {rel} than {v[i]}, so the line goes {way}"
    return Solution(f"The {ORDINALS[i]} point is {v[i]} and the {ORDINALS[i + 1]} point is {v[i + 1]}. "
                    f"{key[0].upper() + key[1:]}. {way.capitalize()} is option {letter}.", letter,
                    f"{key}, option {letter}")


def trace(chart: Chart, q: Question) -> dict[str, str]:
    """The correct four stages (bodies, lower-case stage names as stagewise uses them)."""
    s = solve(chart, q)
    return {"summary": summary(chart, q), "caption": caption(chart), "reasoning": s.reasoning,
            "conclusion": s.answer}


def format_trace(stages: dict[str, str]) -> str:
    """`<SUMMARY> ... </SUMMARY>` and so on, one blank line between stages (the trainer's layout)."""
    return "\n\n".join(f"<{t}> {stages[t.lower()]} </{t}>" for t in STAGE_TAGS)
