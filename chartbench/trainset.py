"""The training file for `stagewise train`: teacher traces, judge and pre-check examples, mixed.

Written in LLaVA-CoT's format (`{id, image, conversations}` per line, one human and one gpt turn), so
the trainer reads it as it reads LLaVA-CoT-100k. Every user turn is the exact text the engine sends
the model: the four-stage data prompt (prompts/full.txt, what `--mode full` asks and continues), a
pairwise judge prompt, or the reasoning pre-check. Judge rows carry the chart; pre-check rows carry
no image (the reference's pre-check is text only), so they have no `image` field.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from chartbench.bench import BenchItem, make_item
from chartbench.charts import render
from chartbench.judging import JUDGE_KINDS, Example, check_example, judge_examples
from chartbench.questions import TYPES
from chartbench.teacher import format_trace, trace
from stages.agent import question_text
from stages.prompts import load_prompt


@dataclass(frozen=True)
class Mix:
    """Per chart: one trace, then each extra example with this probability."""

    judges: float = 0.6           # one pairwise judge example, kind drawn from `judge_kinds`
    checks: float = 0.25          # one reasoning pre-check
    judge_kinds: tuple[str, ...] = JUDGE_KINDS  # repeat a kind to draw it more often
    both_orders: bool = True      # the judge pair in both orders (two rows), or once in a random one


def full_prompt(item: BenchItem) -> str:
    """What `--mode full` sends (search.primitives.Ops.full_prompt)."""
    q = item.question
    return load_prompt("full").render(question=question_text(q.text, list(q.choices) if q.choices else None))


def trace_example(item: BenchItem) -> Example:
    return Example("trace", full_prompt(item), format_trace(trace(item.chart, item.question)), True)


def examples(item: BenchItem, rng: random.Random, mix: Mix = Mix()) -> list[Example]:
    out = [trace_example(item)]
    if rng.random() < mix.judges:
        out += judge_examples(item, rng.choice(mix.judge_kinds), rng, mix.both_orders)
    if rng.random() < mix.checks:
        out.append(check_example(item, rng))
    return out


def row(ex_id: str, ex: Example, image: str | None) -> dict:
    r = {"id": ex_id, "conversations": [{"from": "human", "value": ("<image>\n" if ex.image else "") + ex.prompt},
                                        {"from": "gpt", "value": ex.target}]}
    if ex.image:
        r["image"] = image
    return r


def _write_part(out: Path, part: Path, start: int, stop: int, seed: int, mix: Mix,
                types: tuple[str, ...]) -> Counter:
    """Charts start..stop-1 into `part` (+ their images); each chart draws from its own random stream,
    so the file does not depend on how the range was split among workers."""
    counts: Counter = Counter()
    with open(part, "w", encoding="utf-8") as f:
        for i in range(start, stop):
            item = make_item(seed, i, types, split="train")
            rng = random.Random(f"chartbench-train:{seed}:{i}")
            image = f"images/{item.id}.png"
            render(item.chart).save(out / image, optimize=True)
            for k, ex in enumerate(examples(item, rng, mix)):
                counts[ex.kind] += 1
                f.write(json.dumps(row(f"{item.id}-{k}-{ex.kind}", ex, image)) + "\n")
    return counts


def write_trainset(out, n: int, seed: int = 1, mix: Mix = Mix(),
                   types: tuple[str, ...] = TYPES, workers: int = 1) -> tuple[Path, Counter]:
    """OUT/train.jsonl (+ OUT/images/) from `n` train-split charts (item i of seed `seed`, as
    bench.make_item draws it; `types` may repeat a type to weight it), written by `workers`
    processes; returns the file and a count of rows per kind."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers, n))
    bounds = [(n * w // workers, n * (w + 1) // workers) for w in range(workers)]
    parts = [out / f"train.part{w}.jsonl" for w in range(workers)]
    jobs = [(out, part, a, b, seed, mix, types) for part, (a, b) in zip(parts, bounds)]
    if workers == 1:
        results = [_write_part(*jobs[0])]
    else:
        from multiprocessing import get_context

        with get_context("fork").Pool(workers) as pool:
            results = pool.starmap(_write_part, jobs)
    with open(out / "train.jsonl", "wb") as f:
        for part in parts:
            f.write(part.read_bytes())
            part.unlink()
    return out / "train.jsonl", sum(results, Counter())


def corpus(n: int = 1500, seed: int = 12345, mix: Mix = Mix(judges=1.0, checks=1.0)) -> list[str]:
    """Texts the tokenizer is fitted on: prompts and targets of every kind."""
    rng = random.Random(f"chartbench-corpus:{seed}")
    texts = []
    for i in range(n):
        for ex in examples(make_item(seed, i, split="train"), rng, mix):
            texts += [ex.prompt, ex.target]
    return texts
