"""Wrong versions of each stage, for judge and pre-check examples: the mistakes a small model makes.

A caption misreads the chart (one value off, a wrong colour, a bar or point left out, two values
swapped); a reasoning misreads the caption or slips after reading it; a conclusion names another
answer the question allows; a summary plans for another question. Each returns text that differs
from the correct stage.
"""
from __future__ import annotations

import random
from dataclasses import replace

from chartbench.charts import MAX_VALUE, MIN_ITEMS, PALETTE, Chart
from chartbench.questions import LETTERS, TYPES, Question, kind_of
from chartbench.teacher import SUMMARIES, Solution, caption, solve, summary

CAPTION_ERRORS = ("value", "colour", "drop", "swap")


def _other_value(chart: Chart, rng: random.Random, i: int | None = None) -> int:
    """A value the chart does not hold; half the time one step from value `i` where one is free, the
    near miss a model that reads heights makes most."""
    free = [x for x in range(1, MAX_VALUE + 1) if x not in chart.values]
    near = [x for x in free if i is not None and abs(x - chart.values[i]) == 1]
    return rng.choice(near if near and rng.random() < 0.5 else free)


def misread(chart: Chart, rng: random.Random, error: str | None = None, index: int | None = None) -> Chart:
    """The chart as a misreading sees it (never equal to `chart`)."""
    options = ["value", "swap"] + (["colour"] if chart.kind == "bar" else [])
    if chart.n > (MIN_ITEMS if chart.kind == "bar" else 3):
        options.append("drop")
    error = error if error in options else rng.choice(options)
    values, colours = list(chart.values), list(chart.colours)
    i = index if index is not None else rng.randrange(chart.n)
    if error == "value":
        values[i] = _other_value(chart, rng, i)
    elif error == "colour":
        colours[i] = rng.choice([c for c in PALETTE if c not in colours])
    elif error == "drop":
        values.pop(i)
        if chart.kind == "bar":
            colours.pop(i)
    else:  # swap with a neighbour
        k = i + 1 if i + 1 < chart.n else i - 1
        values[i], values[k] = values[k], values[i]
    return Chart(chart.kind, tuple(colours), tuple(values))


def wrong_caption(chart: Chart, rng: random.Random) -> tuple[str, Chart]:
    seen = misread(chart, rng)
    return caption(seen), seen


def wrong_summary(chart: Chart, q: Question, rng: random.Random) -> str:
    right = summary(chart, q)
    others = [t for t in TYPES if kind_of(t) == chart.kind and SUMMARIES[t] != SUMMARIES[q.qtype]]
    other = rng.choice(others)
    text = SUMMARIES[other].format(a="first", b="second", most="tallest")
    if q.params:  # keep the question's own names where the other plan uses some
        text = SUMMARIES[other].format(
            a=chart.colours[q.params["i"]] if chart.kind == "bar" and "i" in q.params else "first",
            b=chart.colours[q.params["j"]] if chart.kind == "bar" and "j" in q.params else "second",
            most=q.params.get("most", "tallest"))
    return text if text != right else SUMMARIES[other]


def _relevant(q: Question, chart: Chart) -> list[int]:
    """Indices whose value the reasoning uses."""
    p = q.params
    if q.qtype in ("bar_value", "line_value"):
        return [p["i"]]
    if q.qtype == "bar_difference":
        return [p["i"], p["j"]]
    if q.qtype == "line_trend":
        return [p["i"], p["i"] + 1]
    return list(range(chart.n))


def wrong_solution(chart: Chart, q: Question, rng: random.Random) -> Solution:
    """A reasoning that is wrong given the correct caption: it misreads a value the question uses,
    or slips after reading. Its answer differs from the right one whenever the type allows."""
    right = solve(chart, q)
    tries = []
    if q.qtype not in ("bar_count", "line_count"):
        for _ in range(4):
            seen = misread(chart, rng, "value", rng.choice(_relevant(q, chart)))
            tries.append(solve(seen, q))
    tries.append(solve(chart, q, slip=True))
    rng.shuffle(tries)
    tries.sort(key=lambda s: s.answer == right.answer)  # a changed answer first
    for s in tries:
        if s.reasoning != right.reasoning:
            return s
    return solve(chart, q, slip=True)


def other_answers(chart: Chart, q: Question) -> list[str]:
    """The answers this question allows, except the right one."""
    t = q.qtype
    if q.choices:
        pool = list(LETTERS[:len(q.choices)])
    elif t in ("bar_tallest", "bar_shortest"):
        pool = list(chart.colours)
    elif t in ("bar_value", "line_value"):
        pool = [str(x) for x in range(1, MAX_VALUE + 1)]
    elif t in ("bar_difference", "line_range"):
        pool = [str(x) for x in range(1, MAX_VALUE)]
    elif t == "bar_count":
        pool = ["2", "3", "4"]
    elif t == "line_count":
        pool = ["3", "4"]
    else:  # line_peak
        pool = [str(k + 1) for k in range(chart.n)]
    return [a for a in pool if a != q.answer]


def wrong_conclusion(chart: Chart, q: Question, rng: random.Random) -> str:
    return rng.choice(other_answers(chart, q))


def corrupt_answer(chart: Chart, q: Question, rng: random.Random) -> dict[str, str]:
    """A whole wrong answer: a misread caption carried through (the common failure), a reasoning
    mistake, or a conclusion that does not follow."""
    right = {"summary": summary(chart, q), "caption": caption(chart)}
    r = rng.random()
    if r < 0.5:
        seen = misread(chart, rng)
        s = solve(seen, replace(q), slip=False) if _fits(seen, q) else wrong_solution(chart, q, rng)
        return {**right, "caption": caption(seen), "reasoning": s.reasoning, "conclusion": s.answer}
    if r < 0.75:
        s = wrong_solution(chart, q, rng)
        return {**right, "reasoning": s.reasoning, "conclusion": s.answer}
    s = solve(chart, q)
    return {**right, "reasoning": s.reasoning, "conclusion": wrong_conclusion(chart, q, rng)}


def _fits(seen: Chart, q: Question) -> bool:
    """Whether the question can still be worked on a misread chart (its bars/points still exist)."""
    idx = _relevant(q, seen) if seen.n else []
    if any(i >= seen.n for i in q.params.values() if isinstance(i, int)):
        return False
    if q.qtype == "line_trend" and q.params["i"] + 1 >= seen.n:
        return False
    if q.choices and q.qtype == "bar_choice" and set(seen.colours) != set(q.choices):
        return False
    return bool(idx)
