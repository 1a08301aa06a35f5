"""Search graphs over stage agents and judges: built in, declared in TOML, or written in Python."""
from __future__ import annotations

from typing import Any

from engine.items import Item
from search.base import Graph, Roles, Settings, result_fields
from search.graphs import REGISTRY, graph
from search.primitives import Ops, PromptSet
from search.spec import GraphSpec, resolve
from stages.tags import parse_stages

GRAPHS = tuple(REGISTRY)

__all__ = ["GRAPHS", "GraphSpec", "Ops", "Roles", "Settings", "build_graph", "graph", "resolve"]


def build_graph(spec: GraphSpec | str, settings: Settings, roles: Roles) -> Graph:
    """A solver for the batch runner: item → the graph's row fields."""
    spec = resolve(spec) if isinstance(spec, str) else spec
    prompts = PromptSet.load()

    async def solve(item: Item, image_url: str | None) -> dict[str, Any]:
        ops = Ops(item, image_url, settings, roles, prompts)
        text = await spec.fn(ops, settings)
        if not isinstance(text, str):  # a user graph that forgot its `return text`
            raise TypeError(f"graph {spec.name} returned {type(text).__name__}, not the answer's text")
        parsed = parse_stages(text)
        return result_fields(item, parsed.stages, ops.repairs.get(text, []) + parsed.repairs)

    return solve
