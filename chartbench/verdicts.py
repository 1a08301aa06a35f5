"""Where a run's judge chose wrong: decidable verdicts (a right and a wrong final answer) per question type.

`stagewise compare` reports judge accuracy on decidable pairs per stage; on chartbench the question type
says why it is low (the shipped model's whole-answer judge fails where the answer is a colour or an option
letter, or where it must find a bar by colour), and the judge's own words say at which step: a wrong
working, then a verdict that agrees with it, or a right working and a wrong last word.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from chartbench.bench import read_items
from search.judge_quality import run_verdicts


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
