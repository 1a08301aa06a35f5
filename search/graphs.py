"""The four graphs, each a few lines over `Ops.generate` and `Ops.select`.

Write your own the same way: an async function (ops, settings) → final text, registered with
`@graph("name")`; `stagewise generate --graph name` then runs it on every item.
"""
from __future__ import annotations

from typing import Awaitable, Callable

from search.base import Settings
from search.primitives import Ops
from stages.tags import STAGES

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
