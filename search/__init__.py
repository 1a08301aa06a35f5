"""Search graphs over stage agents and judges, by name (built in, or a TOML file)."""
from __future__ import annotations

from typing import Any

from engine.errors import UsageError
from engine.items import Item
from search.base import Graph, Roles, Settings, result_fields
from search.graphs import REGISTRY
from search.primitives import Ops
from stages.tags import parse_stages

GRAPHS = ("chain", "best_of_n", "sentence_beam", "stage_beam")


def build_graph(name: str, settings: Settings, roles: Roles) -> Graph:
    """A solver for the batch runner: item → the graph's row fields."""
    fn = REGISTRY.get(name)
    if fn is None:
        raise UsageError(f"unknown graph {name!r}: choose one of {', '.join(sorted(REGISTRY))}")

    async def solve(item: Item, image_url: str | None) -> dict[str, Any]:
        ops = Ops(item, image_url, settings, roles)
        text = await fn(ops, settings)
        parsed = parse_stages(text)
        return result_fields(item, parsed.stages, ops.repairs.get(text, []) + parsed.repairs)

    return solve
