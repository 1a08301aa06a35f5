"""How well a model judges, away from any search: teacher-versus-corruption pairs on test charts.

For each judge kind, `n` test charts give one pair each, asked in both orders with greedy decoding,
exactly as the engine renders it; the verdict is read from the text (judges.verdict.parse_verdict).
`accuracy` is the share of answers naming the right response, `second_rate` the share naming the one
shown second (0.5 for a judge without a position preference). The reasoning pre-check is scored the
same way on a right and a wrong reasoning per chart. A search can only pay where these are high.
`judge_by_type` asks one judge kind per question type.
"""
from __future__ import annotations

import random
from collections import Counter

from chartbench.bench import make_item, make_items
from chartbench.charts import render
from chartbench.generation import generate, load
from chartbench.judging import JUDGE_KINDS, check_example, judge_examples
from chartbench.questions import TYPES
from judges.verdict import check_failed, parse_verdict


def _verdicts(model, proc, items, images, kind: str, rng: random.Random, batch: int) -> Counter:
    """One `kind` pair per item, asked in both orders: how many answers, right ones, and ones naming the second."""
    exs = [(ex, im) for item, im in zip(items, images) for ex in judge_examples(item, kind, rng)]
    said = generate(model, proc, [ex.prompt for ex, _ in exs], [im for _, im in exs], batch=batch,
                    do_sample=False, max_new_tokens=112)  # the longest reason (a scan, both conclusions) is ~80 tokens
    t = Counter()
    for (ex, _), text in zip(exs, said):
        v = parse_verdict(text)
        t["asked"] += 1
        t["right"] += v == ex.better - 1
        t["second"] += v == 1
    return t


def _row(t: Counter) -> dict:
    return {"pairs": t["asked"] // 2, "accuracy": round(t["right"] / t["asked"], 3),
            "second_rate": round(t["second"] / t["asked"], 3)}


def judge_bench(model_dir, n: int = 100, seed: int = 777, batch: int = 32) -> dict[str, dict]:
    """{kind: {pairs, accuracy, second_rate}} for every judge kind, plus "check": {checks, accuracy}."""
    model, proc = load(model_dir)
    rng = random.Random(f"judgebench:{seed}")
    items = [make_item(seed, i) for i in range(n)]  # test-split charts, as benchmarks draw them
    images = [render(item.chart) for item in items]
    result: dict[str, dict] = {kind: _row(_verdicts(model, proc, items, images, kind, rng, batch))
                               for kind in JUDGE_KINDS}
    exs = [check_example(item, rng, wrong=w) for item in items for w in (False, True)]
    said = generate(model, proc, [ex.prompt for ex in exs], [None] * len(exs), batch=batch, do_sample=False,
                    max_new_tokens=4)
    right = sum(check_failed(text) is (ex.target == "incorrect") for ex, text in zip(exs, said))
    result["check"] = {"checks": len(exs), "accuracy": round(right / len(exs), 3)}
    return result


def judge_by_type(model_dir, kind: str, n: int = 30, seed: int = 777, batch: int = 32) -> dict[str, dict]:
    """{question type: {pairs, accuracy, second_rate}} for one judge kind, `n` test charts per type. A
    judge's overall accuracy hides where it fails: the embedded model's whole-answer judge is near 1.0
    where the answer is a number and at chance where it is a colour (stagewise/model/TRAINING.md)."""
    model, proc = load(model_dir)
    rng = random.Random(f"judgebench:{kind}:{seed}")
    result = {}
    for qtype in TYPES:
        items = make_items(n, seed, types=(qtype,))
        result[qtype] = _row(_verdicts(model, proc, items, [render(i.chart) for i in items], kind, rng, batch))
    return result
