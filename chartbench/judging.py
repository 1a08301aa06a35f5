"""Judge and reasoning pre-check examples, rendered with the project's own judge prompts.

Each pairwise example is one comparison the graphs make (judges.pairwise.render_judge with the same
question text, hint and response bodies the engine extracts), between the teacher's stage and a
corrupted one, in random order; the target is the reference's format, "Since [reason], I choose
response [1/2].", with a reason naming the decisive fact. Pre-check examples are the text-only
check_reasoning prompt with the caption as "Given Information"; the target is "correct" or
"incorrect". Kinds: summary, caption, reasoning, conclusion (stage_beam) and answer (best_of_n).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from chartbench.bench import BenchItem
from chartbench.charts import PALETTE
from chartbench.corrupt import corrupt_answer, wrong_caption, wrong_conclusion, wrong_solution, wrong_summary
from chartbench.questions import Question
from chartbench.teacher import format_trace, solve, trace
from judges.pairwise import render_check, render_judge, stage_hint
from judges.scorers import score
from stages.agent import question_text
from stages.tags import parse_stages

JUDGE_KINDS = ("summary", "caption", "reasoning", "conclusion", "answer")


@dataclass(frozen=True)
class Example:
    """One training dialog turn: `prompt` is the user text exactly as the engine sends it; `image`
    says whether the chart goes with it (judges: yes; pre-checks: no, as in the reference)."""

    kind: str
    prompt: str
    target: str
    image: bool
    better: int | None = None  # 1 or 2 for pairwise examples


def verdict(reason: str, better: int) -> str:
    return f"Since {reason}, I choose response {better}."


def reading(item: BenchItem) -> str:
    """What the chart shows, in short: 'red 7, blue 3' or 'points 5, 3, 6'."""
    c = item.chart
    if c.kind == "bar":
        return ", ".join(f"{col} {v}" for col, v in zip(c.colours, c.values))
    return "points " + ", ".join(str(v) for v in c.values)


def judge_examples(item: BenchItem, kind: str, rng: random.Random, both_orders: bool = True) -> list[Example]:
    """A `kind` comparison of the teacher's stage with a corrupted one: in both orders (so a position
    carries no information about the winner), or once with the better one placed at random."""
    chart, q = item.chart, item.question
    good = trace(chart, q)
    if kind == "summary":
        wrong = wrong_summary(chart, q, rng)
    elif kind == "caption":
        wrong = wrong_caption(chart, rng)[0]
    elif kind == "reasoning":
        wrong = wrong_solution(chart, q, rng).reasoning
    elif kind == "conclusion":
        wrong = wrong_conclusion(chart, q, rng)
    elif kind == "answer":  # a wrong answer that concludes otherwise where one can be drawn: the verdict
        for _ in range(4):  # quotes both conclusions, and a search never needs to tell two that agree apart
            bad = corrupt_answer(chart, q, rng)
            if bad["conclusion"] != good["conclusion"]:
                break
        wrong = format_trace(bad)
    else:
        raise ValueError(f"unknown judge kind {kind!r}")
    right = format_trace(good) if kind == "answer" else good[kind]
    hint = stage_hint(kind, good) if kind in ("reasoning", "conclusion") else None
    orders = (1, 2) if both_orders else (rng.choice((1, 2)),)
    return pair_examples(item, kind, right, wrong, hint, orders)


def decisive_reason(item: BenchItem, kind: str) -> str:
    """What a judge of `kind` should say decides the pair ("{w}": the better response's number)."""
    chart, q = item.chart, item.question
    if kind == "summary":
        return "response {w} outlines the steps this question needs"
    if kind == "caption":
        return f"the image shows {reading(item)}"
    if kind == "reasoning":
        return solve(chart, q).key
    if kind == "conclusion":
        return f"the reasoning gives {solve(chart, q).answer}"
    if kind == "answer":  # the decisive step written out (for a bar found by colour, the scan), so the
        s = solve(chart, q)  # answer is never one leap from the reading: the largest value, its bar, its option
        return f"the image shows {reading(item)}; {s.key}, so the answer is {s.answer}"
    raise ValueError(f"unknown judge kind {kind!r}")


def pair_examples(item: BenchItem, kind: str, right: str, wrong: str, hint: str | None,
                  orders: tuple[int, ...] = (1, 2)) -> list[Example]:
    """The `kind` comparison of `right` with `wrong` (the bodies the judge is shown), one example per
    position of the better one in `orders`."""
    q = item.question
    choices = list(q.choices) if q.choices else None
    question = question_text(q.text, choices)
    reason = decisive_reason(item, kind)
    out = []
    for better in orders:
        r1, r2 = (right, wrong) if better == 1 else (wrong, right)
        prompt = render_judge(kind, question, r1, r2, hint=hint)
        why = reason.format(w=better)
        if kind in ("answer", "conclusion", "reasoning"):
            why += (_checked(says(r1, kind, q), q.answer, choices, 1)
                    + _checked(says(r2, kind, q), q.answer, choices, 2, last=True))
        out.append(Example(kind, prompt, verdict(why, better), True, better))
    return out


def says(text: str, kind: str, question: Question) -> str:
    """What a response concludes: the first word of a whole answer's CONCLUSION or of a conclusion body,
    or what a reasoning works out (`worked_out`)."""
    if kind == "reasoning":
        return worked_out(text, question)
    words = ((parse_stages(text).stages.get("conclusion") or "") if kind == "answer" else text).split()
    return words[0] if words else "nothing"


def worked_out(reasoning: str, question: Question) -> str:
    """The answer a reasoning arrives at, in the answer's own form: its last option letter ("Blue is option
    B") where the question has options, else its last colour where the answer is a colour, else its last
    number; "nothing" where it has none. The reasoning judge checks this as the others check conclusions:
    without it, run S's reasoning judge worked the answer out right and then chose by position."""
    words = re.findall(r"[A-Za-z]+|\d+", reasoning)
    if question.choices:
        found = [w for before, w in zip([""] + words, words) if before.lower() == "option" and len(w) == 1]
    elif question.answer in PALETTE:
        found = [w for w in words if w.lower() in PALETTE]
    else:
        found = [w for w in words if w.isdigit()]
    return found[-1] if found else "nothing"


def _checked(said: str, answer: str, choices: list[str] | None, number: int, last: bool = False) -> str:
    """"; response 1 says blue, no" / ", and response 2 says green, yes": after working the answer out,
    the judge copies each response's conclusion and checks it against its own answer, so the verdict
    follows a "yes" (a choice by position). Picking which of two quoted words equals the answer stayed
    at chance for colours even after 25,000 such pairs (runs J, L, M); the check, shown 32,000 colour
    pairs, was right on 0.97 (run N, stagewise/model/TRAINING.md). "yes" is the benchmark's own scorer's
    call, so the check agrees with how a response is marked right."""
    ok = "yes" if score(said.rstrip("."), answer, choices) else "no"
    return f"{', and' if last else ';'} response {number} says {said}, {ok}"


def judge_example(item: BenchItem, kind: str, rng: random.Random) -> Example:
    """One `kind` comparison, the better one placed at random."""
    return judge_examples(item, kind, rng, both_orders=False)[0]


def check_example(item: BenchItem, rng: random.Random, wrong: bool | None = None) -> Example:
    """The reasoning pre-check on the teacher's reasoning (target "correct") or a wrong one
    ("incorrect"), given the correct caption."""
    chart, q = item.chart, item.question
    wrong = rng.random() < 0.5 if wrong is None else wrong
    reasoning = wrong_solution(chart, q, rng).reasoning if wrong else solve(chart, q).reasoning
    prompt = render_check(trace(chart, q)["caption"], reasoning)
    return Example("check", prompt, "incorrect" if wrong else "correct", False)
