"""Where a run's judge chose wrong: decidable verdicts (a right and a wrong final answer) per question type.

`stagewise compare` reports judge accuracy on decidable pairs per stage; on chartbench the question type
says why it is low (the shipped model's whole-answer judge fails where the answer is a colour or an option
letter, or where it must find a bar by colour), and the judge's own words say at which step: a wrong
working, then a verdict that agrees with it, or a right working and a wrong last word.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from chartbench.bench import read_items
from chartbench.judging import says
from chartbench.questions import Question
from judges.scorers import score
from search.judge_quality import run_verdicts

SLIPS = ("working", "quote", "check", "pick", "form")
_WORKING = re.compile(r"so the answer is (.*?);")
_SAYS = re.compile(r"response ([12]) says (.*?), (yes|no)\b")
_PICK = re.compile(r"I choose response ([12])")


def verdicts_by_type(run_dir, items) -> tuple[dict[str, dict], list[dict]]:
    """({question type: {"decidable", "correct", "accuracy"}} plus "all", [each wrong verdict: item,
    type, stage, reference, both conclusions, the judge's outputs])."""
    questions = {item.id: item.question for item in read_items(items)}
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    wrong = []
    for v in run_verdicts(Path(run_dir), Path(items)):
        if not v.decidable:
            continue
        q = questions[v.item_id]  # a decidable pair's item has a reference answer, so it is in ITEMS
        for key in (q.qtype, "all"):
            tally[key][0] += 1
            tally[key][1] += bool(v.correct)
        if not v.correct:
            wrong.append({"item": v.item_id, "type": q.qtype, "stage": v.event["stage"],
                          "reference": q.answer, "conclusions": list(v.conclusions),
                          "said": v.event.get("outputs") or []})
    rows = {k: {"decidable": n, "correct": c, "accuracy": round(c / n, 3)}
            for k, (n, c) in sorted(tally.items(), key=lambda kv: (kv[0] == "all", kv[0]))}
    return rows, wrong


def first_slip(text: str, conclusions: tuple[str | None, str | None], question: Question) -> str | None:
    """Where a whole-answer verdict in the trained judge's form ("Since the image shows ...; so the answer is
    X; response 1 says A, yes, and response 2 says B, no, I choose response 1.") first goes wrong: "working"
    (X is not the answer); a yes or no that a response does not earn, after a "quote" of what it does not
    conclude or a "check" of what it does; "pick" (a choice the yes/no do not give); "form" (not in that
    form); None where every step holds (a misquote that earns the right yes or no is no slip). A judge that
    works the answer out and then slips needs other training than one that misreads the chart."""
    choices = list(question.choices) if question.choices else None
    working, pick = _WORKING.search(text), _PICK.search(text)
    said = {int(n): (w, yn) for n, w, yn in _SAYS.findall(text)}
    if not working or set(said) != {1, 2} or not pick:
        return "form"
    if not score(working.group(1), question.answer, choices):
        return "working"
    for n in (1, 2):
        word, yes = said[n][0].rstrip("."), said[n][1] == "yes"
        conclusion = conclusions[n - 1] or ""
        if yes != bool(score(conclusion, question.answer, choices)):
            return "quote" if word != says(conclusion, "conclusion", question).rstrip(".") else "check"
    if [said[1][1], said[2][1]] != (["yes", "no"] if pick.group(1) == "1" else ["no", "yes"]):
        return "pick"
    return None


def slips(run_dir, items) -> dict[str, Counter]:
    """The whole-answer judge's first slip (`first_slip`; "none" where there is none) on each decidable pair
    of a run, counted apart for the verdicts it got right and wrong: {"right": Counter, "wrong": Counter}."""
    questions = {item.id: item.question for item in read_items(items)}
    out = {"right": Counter(), "wrong": Counter()}
    for v in run_verdicts(Path(run_dir), Path(items)):
        if v.decidable and v.event["stage"] == "answer":
            text = (v.event.get("outputs") or [""])[-1]
            slip = first_slip(text, v.conclusions, questions[v.item_id])
            out["right" if v.correct else "wrong"][slip or "none"] += 1
    return out
