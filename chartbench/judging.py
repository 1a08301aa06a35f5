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
from dataclasses import dataclass

from chartbench.bench import BenchItem
from chartbench.corrupt import corrupt_answer, wrong_caption, wrong_conclusion, wrong_solution, wrong_summary
from chartbench.teacher import format_trace, solve, trace
from judges.pairwise import render_check, render_judge, stage_hint
from stages.agent import question_text

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
    hint = None
    if kind == "summary":
        right, wrong = good["summary"], wrong_summary(chart, q, rng)
        reason = "response {w} outlines the steps this question needs"
    elif kind == "caption":
        right, (wrong, _) = good["caption"], wrong_caption(chart, rng)
        reason = f"the image shows {reading(item)}"
    elif kind == "reasoning":
        right, wrong = good["reasoning"], wrong_solution(chart, q, rng).reasoning
        hint = stage_hint("reasoning", good)
        reason = solve(chart, q).key
    elif kind == "conclusion":
        right, wrong = good["conclusion"], wrong_conclusion(chart, q, rng)
        hint = stage_hint("conclusion", good)
        reason = f"the reasoning gives {good['conclusion']}"
    elif kind == "answer":
        right, wrong = format_trace(good), format_trace(corrupt_answer(chart, q, rng))
        reason = f"the image shows {reading(item)} and the answer is {good['conclusion']}"
    else:
        raise ValueError(f"unknown judge kind {kind!r}")
    question = question_text(q.text, list(q.choices) if q.choices else None)
    out = []
    for better in ((1, 2) if both_orders else (rng.choice((1, 2)),)):
        r1, r2 = (right, wrong) if better == 1 else (wrong, right)
        prompt = render_judge(kind, question, r1, r2, hint=hint)
        out.append(Example(kind, prompt, verdict(reason.format(w=better), better), True, better))
    return out


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
