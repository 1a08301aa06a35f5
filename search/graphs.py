"""The built-in graphs, each a few lines over `Ops.generate` and `Ops.select`.

Write your own the same way: an async function (ops, settings) → final text, registered with
`@graph("name")`; `stagewise generate --graph name` then runs it on every item.
"""
from __future__ import annotations

from typing import Awaitable, Callable

from judges.scorers import answer_part, extract_choice, normalize, to_number
from search.base import Settings
from search.primitives import Ops
from stages.tags import STAGES, answer_from_conclusion

GraphFn = Callable[[Ops, Settings], Awaitable[str]]
REGISTRY: dict[str, GraphFn] = {}


def graph(name: str) -> Callable[[GraphFn], GraphFn]:
    def register(fn: GraphFn) -> GraphFn:
        REGISTRY[name] = fn
        return fn
    return register


@graph("chain")
async def chain(ops: Ops, s: Settings) -> str:
    if s.mode == "full":
        return (await ops.generate("", "full", 1))[0]
    text = ""
    for stage in STAGES:
        text = (await ops.generate(text, stage, 1))[0]
    return text


@graph("best_of_n")
async def best_of_n(ops: Ops, s: Settings) -> str:
    candidates = await ops.generate("", "full", s.n)
    return candidates[await ops.select(candidates, "answer")]


@graph("stage_beam")
async def stage_beam(ops: Ops, s: Settings) -> str:
    text = ""
    for stage in STAGES:
        candidates = await ops.generate(text, stage, s.n)
        text = candidates[await ops.select(candidates, stage)]
    return text


@graph("sentence_beam")
async def sentence_beam(ops: Ops, s: Settings) -> str:
    text = ""
    for _ in range(s.max_sentences):
        candidates = await ops.generate(text, "sentence", s.n)
        text = candidates[await ops.select(candidates, "sentence", prefix=text)]
        if "</CONCLUSION>" in text.upper():
            return text
    return text


def conclusion_key(text: str, choices: list[str] | None = None) -> str | None:
    """What a whole answer concludes, so equal answers count as one vote: the option letter, a
    number, else the normalized answer text; None for tagged text without a CONCLUSION (a plain
    answer without any tag is taken whole)."""
    conclusion = answer_from_conclusion(text)  # a plain answer without tags is its own conclusion
    if not conclusion or not conclusion.strip():
        return None
    letter = extract_choice(conclusion, choices) if choices else None
    if letter:
        return letter
    number = to_number(answer_part(conclusion))
    return f"{number:.15g}" if number is not None else normalize(answer_part(conclusion))


@graph("vote")
async def vote(ops: Ops, s: Settings) -> str:
    """Self-consistency, the baseline a judge must beat: N whole answers, the most common conclusion
    wins (its first candidate); a tie between the most common goes to the judge, among one candidate
    of each. Tagged answers without a CONCLUSION get no vote (if none has one, the judge picks among
    all, and those cut off before their CONCLUSION lose); a plain answer with no tags votes as itself."""
    candidates = await ops.generate("", "full", s.n)
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(candidates):
        key = conclusion_key(text, ops.item.choices)
        if key is not None:
            groups.setdefault(key, []).append(i)
    if not groups:
        return candidates[await ops.select(candidates, "answer")]
    most = max(len(g) for g in groups.values())
    leaders = [g[0] for g in groups.values() if len(g) == most]
    if len(leaders) == 1:
        return candidates[leaders[0]]
    return candidates[await ops.select(candidates, "answer", among=set(leaders))]
