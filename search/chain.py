"""The linear chain: one candidate per stage (staged) or one 4-tag call (full); no judge."""
from __future__ import annotations

from typing import Any

from engine.items import Item
from engine.trace import child_span
from search.base import Roles, Settings, result_fields
from stages.agent import FullAgent, StageAgent, question_text
from stages.tags import STAGES


def chain(settings: Settings, roles: Roles):
    agents = [StageAgent.load(s) for s in STAGES]
    full = FullAgent.load()

    async def solve(item: Item, image_url: str | None) -> dict[str, Any]:
        question = question_text(item.question, item.choices)
        if settings.mode == "full":
            [completion] = await roles.generator.complete(
                full.request(question, image_url, n=1, sampling=settings.sampling))
            parsed = full.parse(completion.text)
            return result_fields(item, parsed.stages, parsed.repairs)
        chosen: dict[str, str] = {}
        repairs: list[str] = []
        for agent in agents:
            with child_span(stage=agent.stage):
                [completion] = await roles.generator.complete(
                    agent.request(question, image_url, chosen, n=1, sampling=settings.sampling))
            text = agent.parse(completion.text)
            chosen[agent.stage] = text.body
            repairs += text.repairs
        return result_fields(item, chosen, repairs)

    return solve
