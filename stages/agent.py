"""Stage agents: a prompt file plus the rules to ask for one stage and read it back.

`StageAgent` asks for one stage (staged mode: its own prompt, the chosen earlier stages restated, the
closing tag as stop string). `FullAgent` asks for all four in one call (the 4-tag data prompt).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.messages import user_message
from engine.types import Request
from stages.prompts import Prompt, load_prompt
from stages.tags import ParsedStages, before_other_tags, format_stages, parse_stages, without_tags


@dataclass(frozen=True, slots=True)
class Sampling:
    """The reference samples every call with T 0.6, top_p 0.9 and 2048 new tokens."""

    temperature: float = 0.6
    top_p: float = 0.9
    max_tokens: int = 2048
    seed: int | None = 0


def question_text(question: str, choices: list[str] | None = None) -> str:
    """The question as the model sees it: options lettered A, B, C... when the item has choices."""
    if not choices:
        return question
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return question + "\nOptions:\n" + "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(choices))


@dataclass(frozen=True)
class StageText:
    body: str
    repairs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StageAgent:
    stage: str
    prompt: Prompt

    @classmethod
    def load(cls, stage: str) -> "StageAgent":
        return cls(stage, load_prompt(stage))

    @property
    def closing_tag(self) -> str:
        return f"</{self.stage.upper()}>"

    def request(self, question: str, image_url: str | None, previous: dict[str, str], *, n: int,
                sampling: Sampling, **tags: Any) -> Request:
        text = self.prompt.render(question=question, previous=format_stages(previous) or "(none yet)")
        return Request(messages=[user_message(text, image_url)], n=n, temperature=sampling.temperature,
                       top_p=sampling.top_p, max_tokens=sampling.max_tokens, seed=sampling.seed,
                       stop=(self.closing_tag,),
                       tags={"stage": self.stage, "role": "generate", "prompt": self.prompt.fingerprint,
                             **tags})

    def parse(self, text: str) -> StageText:
        """The stage body; the closing tag may be missing (stop strings are not returned)."""
        parsed = parse_stages(text)
        body = parsed.stages[self.stage]
        repairs = [r for r in parsed.repairs if r != f"{self.stage}: no closing tag"]
        if body is None:
            head = before_other_tags(text, self.stage).strip()
            if head == text.strip():
                return StageText(head, repairs + [f"{self.stage}: no opening tag, took the whole reply"])
            if head:
                return StageText(head, repairs + [f"{self.stage}: no opening tag, took the reply up to another "
                                                  f"stage's tag"])
            return StageText(without_tags(text), repairs + [
                f"{self.stage}: no opening tag, took the reply without its tags"])
        return StageText(body, repairs)


@dataclass(frozen=True)
class FullAgent:
    prompt: Prompt

    @classmethod
    def load(cls) -> "FullAgent":
        return cls(load_prompt("full"))

    def request(self, question: str, image_url: str | None, *, n: int, sampling: Sampling,
                **tags: Any) -> Request:
        return Request(messages=[user_message(self.prompt.render(question=question), image_url)], n=n,
                       temperature=sampling.temperature, top_p=sampling.top_p,
                       max_tokens=sampling.max_tokens, seed=sampling.seed,
                       tags={"stage": "full", "role": "generate", "prompt": self.prompt.fingerprint, **tags})

    @staticmethod
    def parse(text: str) -> ParsedStages:
        return parse_stages(text)
