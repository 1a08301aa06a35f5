"""Judge examples from a model's own candidates (on-policy): what its judge will really be shown.

Judge examples built only from the teacher's stages and hand-made corruptions teach a judge the
mistakes we imagined; sampled candidates carry the ones the model makes (a value read off the wrong
bar, a stage that wanders into another task's words). This samples N whole answers per training chart
at the temperatures a search samples at, parses their stages, and pairs every wrong stage with the
teacher's and every wrong whole answer with one of its own right ones (the teacher's when none was
right: a judge shown only clean right answers could learn to pick the clean one), in both orders,
with the teacher's decisive reason as the target;
a wrong reasoning also gives a pre-check example ("incorrect"). With `stages`, it also samples those
stages one at a time after the teacher's earlier ones, as stage_beam asks them (whole answers rarely
reach a wrong conclusion after a right reasoning, so its judge would otherwise see few such pairs).
Runs on a GPU in about a minute for tens of thousands of charts, or slowly on a CPU.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from chartbench.bench import BenchItem, make_item
from chartbench.charts import render
from chartbench.generation import generate, load
from chartbench.judging import Example, pair_examples
from chartbench.questions import TYPES
from chartbench.teacher import format_trace, trace
from chartbench.trainset import full_prompt, row
from judges.pairwise import render_check, stage_hint
from judges.scorers import score
from stages.tags import STAGES, parse_stages


def _sample(model, proc, items: list[BenchItem], images: list[Path], *, samples: int, temperature: float,
            top_p: float, batch: int, seed: int, max_new_tokens: int = 128, **more) -> list[str]:
    """`samples` replies per item to the four-stage prompt (in a row per item), sampled as the engine
    samples: temperature and top-p only (`top_k=0`: generate's default top-k of 50 would cut the tail a
    hot search draws from; at T 2.0 it made run I right on 0.86 of its samples, against 0.49 in the
    demo's chain)."""
    return generate(model, proc, [full_prompt(item) for item in items], images, batch=batch, seed=seed,
                    num_return_sequences=samples, do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                    max_new_tokens=max_new_tokens, **more)


def sample_answers(model, proc, items: list[BenchItem], images: list[Path], *, samples: int, **sampling
                   ) -> list[list[str]]:
    """`samples` whole answers per item (its chart at `images[i]`), as `--mode full` asks them."""
    new = _sample(model, proc, items, images, samples=samples, **sampling)
    return [new[i * samples:(i + 1) * samples] for i in range(len(items))]


def _right_conclusion(item: BenchItem, conclusion: str | None) -> bool:
    """Whether a conclusion is right by the benchmark's own scorer."""
    choices = list(item.question.choices) if item.question.choices else None
    return bool(conclusion) and score(conclusion, item.question.answer, choices)


def examples_from_samples(item: BenchItem, answers: list[str], rng: random.Random) -> tuple[list[Example], Counter]:
    """Judge and pre-check examples from one item's sampled answers, and a tally of what was right."""
    good = trace(item.chart, item.question)
    tally: Counter = Counter()
    out: list[Example] = []
    seen: set[tuple[str, str]] = set()
    parsed = [parse_stages(text).stages for text in answers]
    right = [_right_conclusion(item, s.get("conclusion")) for s in parsed]
    sampled_right = [text.strip() for text, ok in zip(answers, right) if ok]
    for text, stages, right_answer in zip(answers, parsed, right):
        tally["answers"] += 1
        tally["answers_right"] += right_answer
        if not right_answer and ("answer", text.strip()) not in seen:
            seen.add(("answer", text.strip()))
            better = rng.choice(sampled_right) if sampled_right else format_trace(good)
            out += pair_examples(item, "answer", better, text.strip(), None)
        # each stage is judged after the earlier stages were chosen right (as a search that works sees it)
        for kind in STAGES:
            body = (stages.get(kind) or "").strip()
            earlier_right = all((stages.get(k) or "").strip() == good[k] for k in STAGES[:STAGES.index(kind)])
            if not earlier_right:
                break
            tally[f"{kind}_seen"] += 1
            if body == good[kind]:
                tally[f"{kind}_right"] += 1
                continue
            if not body or (kind, body) in seen:
                continue
            seen.add((kind, body))
            out += _wrong_stage_rows(item, kind, body, good, good[kind])
    rng.shuffle(out)
    return out, tally


def _wrong_stage_rows(item: BenchItem, kind: str, wrong: str, good: dict[str, str], better: str) -> list[Example]:
    """A wrong `kind` body against `better`, both orders, after the teacher's earlier stages (the hint the
    stage judge is shown); a wrong reasoning also gives a pre-check pair."""
    hint = stage_hint(kind, good) if kind in ("reasoning", "conclusion") else None
    out = pair_examples(item, kind, better, wrong, hint)
    if kind == "reasoning":
        out.append(Example("check", render_check(good["caption"], wrong), "incorrect", False))
        out.append(Example("check", render_check(good["caption"], good["reasoning"]), "correct", False))
    return out


def stage_start(good: dict[str, str], stage: str) -> str:
    """The teacher's answer up to where `stage` begins, as a stage search continues its chosen prefix."""
    text = format_trace(good)
    i = STAGES.index(stage)
    if i == 0:
        return ""
    closing = f"</{STAGES[i - 1].upper()}>"
    return text[:text.index(closing) + len(closing)]


def sample_stage(model, proc, items: list[BenchItem], images: list[Path], stage: str, *, samples: int,
                 **sampling) -> list[list[str]]:
    """`samples` bodies of `stage` per item, each continuing the teacher's earlier stages and stopped at
    the stage's closing tag, as stage_beam asks for them."""
    starts = [stage_start(trace(item.chart, item.question), stage) for item in items]
    new = _sample(model, proc, items, images, samples=samples, starts=starts,
                  stop_strings=[f"</{stage.upper()}>"], tokenizer=proc.tokenizer, **sampling)
    bodies = [(parse_stages(starts[i // samples] + text).stages.get(stage) or "").strip()
              for i, text in enumerate(new)]
    return [bodies[i * samples:(i + 1) * samples] for i in range(len(items))]


def examples_from_stage_samples(item: BenchItem, stage: str, bodies: list[str],
                                rng: random.Random) -> tuple[list[Example], Counter]:
    """Judge examples from one item's sampled `stage` bodies: each wrong one against the teacher's, or,
    for a conclusion, against one of its own right ones (the teacher's where none was right)."""
    good = trace(item.chart, item.question)

    def right(body: str) -> bool:
        return _right_conclusion(item, body) if stage == "conclusion" else body == good[stage]

    sampled_right = [b for b in bodies if right(b)] if stage == "conclusion" else []
    tally: Counter = Counter({f"{stage}_sampled": len(bodies), f"{stage}_sampled_right": sum(map(right, bodies))})
    out: list[Example] = []
    for body in dict.fromkeys(b for b in bodies if b and not right(b)):  # each wrong body once, in order
        better = rng.choice(sampled_right) if sampled_right else good[stage]
        out += _wrong_stage_rows(item, stage, body, good, better)
    rng.shuffle(out)
    return out, tally


def _render_to(item: BenchItem, path: Path) -> None:
    render(item.chart).save(path, optimize=True)


def write_onpolicy(out, model_dir, n: int, seed: int, *, samples: int = 4, temperatures: tuple[float, ...] = (1.5,),
                   top_p: float = 0.95, batch: int = 256, types: tuple[str, ...] = TYPES,
                   stages: tuple[str, ...] = (), workers: int = 1) -> tuple[Path, Counter]:
    """OUT/onpolicy.jsonl (+ images) from `n` train-split charts of seed `seed` (`types` may repeat a type
    to weight it, as the training set's do: draw the types the model gets wrong); each chart is sampled at
    one of `temperatures` in turn: whole answers, and each of `stages` after the teacher's earlier stages
    (a whole answer reaches a wrong conclusion after the teacher's reasoning only rarely). Returns the file
    and a tally of rows and of sampled stages right."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    items = [make_item(seed, i, types, split="train") for i in range(n)]
    paths = [out / "images" / f"{item.id}.png" for item in items]
    from multiprocessing import get_context

    with get_context("fork").Pool(workers) as pool:
        pool.starmap(_render_to, [(item, path) for item, path in zip(items, paths)], chunksize=64)
    tally: Counter = Counter()
    path = out / "onpolicy.jsonl"
    model, proc = load(model_dir)
    with open(path, "w", encoding="utf-8") as f:
        for t_index, temperature in enumerate(temperatures):
            picked = list(range(t_index, n, len(temperatures)))
            answers = sample_answers(model, proc, [items[i] for i in picked], [paths[i] for i in picked],
                                     samples=samples, temperature=temperature, top_p=top_p, batch=batch,
                                     seed=seed + t_index)
            for i, texts in zip(picked, answers):
                item = items[i]
                rng = random.Random(f"chartbench-onpolicy:{seed}:{i}")
                exs, t = examples_from_samples(item, texts, rng)
                tally.update({f"T{temperature}:{k}": v for k, v in t.items()})
                _write_rows(f, item, exs, "p", tally)
            for stage in stages:
                bodies = sample_stage(model, proc, [items[i] for i in picked], [paths[i] for i in picked], stage,
                                      samples=samples, temperature=temperature, top_p=top_p, batch=batch,
                                      seed=seed + t_index + 1000 * (1 + STAGES.index(stage)))
                for i, sampled in zip(picked, bodies):
                    item = items[i]
                    rng = random.Random(f"chartbench-onpolicy:{seed}:{i}:{stage}")
                    exs, t = examples_from_stage_samples(item, stage, sampled, rng)
                    tally.update({f"T{temperature}:{k}": v for k, v in t.items()})
                    _write_rows(f, item, exs, f"s{stage[:3]}", tally)
    return path, tally


def _write_rows(f, item: BenchItem, examples: list[Example], tag: str, tally: Counter) -> None:
    """One training row per example (ids ITEM-TAGk-KIND, the chart beside the file), counted by kind."""
    for k, ex in enumerate(examples):
        tally[ex.kind] += 1
        f.write(json.dumps(row(f"{item.id}-{tag}{k}-{ex.kind}", ex, f"images/{item.id}.png")) + "\n")
