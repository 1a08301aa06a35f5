"""Search graphs over stage agents and judges, by name."""
from __future__ import annotations

from engine.errors import UsageError
from search.base import Graph, Roles, Settings

GRAPHS = ("chain", "best_of_n", "sentence_beam", "stage_beam")


def build_graph(name: str, settings: Settings, roles: Roles) -> Graph:
    if name == "chain":
        from search.chain import chain

        return chain(settings, roles)
    if name in GRAPHS:
        raise UsageError(f"graph {name!r} is not built yet; use --graph chain")
    raise UsageError(f"unknown graph {name!r}: choose one of {', '.join(GRAPHS)}")
