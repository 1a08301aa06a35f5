"""What every graph is given (settings and the clients for each role) and what it returns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from engine.client import Client
from engine.items import Item
from judges.scorers import score
from stages.agent import Sampling
from stages.tags import STAGES, format_stages

Graph = Callable[[Item, "str | None"], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Settings:
    mode: str = "staged"          # "full": one 4-tag call; "staged": one call per stage
    n: int = 4                    # candidates per step
    selection: str = "bracket"    # "knockout" (the reference's) or "bracket"
    faithful: bool = False        # reproduce the reference's verdict rule exactly
    judge_order: str = "first"    # "both": every comparison asked in both orders (position-debiased)
    judge_logprobs: bool = True   # read verdicts from logprobs where the judge's backend returns them
    judge_temperature: float | None = None  # judges' and pre-checks' temperature; None: sampling's
    max_sentences: int = 64       # sentence_beam stops here if the CONCLUSION never closes
    sampling: Sampling = Sampling()


@dataclass(frozen=True)
class Roles:
    """A client per role, so the judge can be a cheaper model than the generator."""

    generator: Client
    judge: Client


def result_fields(item: Item, stages: dict[str, str | None], repairs: list[str]) -> dict[str, Any]:
    """The part of a results row a graph owns: stages, full response, answer, correctness."""
    response = format_stages(stages, sep="")
    answer = stages.get("conclusion")
    correct = None
    if item.answer is not None:
        correct = bool(answer is not None and score(answer, item.answer, item.choices))
    return {"stages": {s: stages.get(s) for s in STAGES}, "response": response, "answer": answer,
            "correct": correct, "repairs": repairs}
