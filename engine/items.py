"""ITEMS.jsonl: read lazily, one validated item at a time (100k lines are never held at once)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import orjson

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator


class Item(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    id: str
    question: str
    image: str | None = None
    answer: str | None = None
    choices: list[str] | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_string(cls, v: object) -> object:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("answer", mode="before")
    @classmethod
    def _answer_as_string(cls, v: object) -> object:
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


@dataclass(slots=True)
class BadLine:
    """A line that could not become an item; it still becomes one (error) row."""

    id: str
    error: str
    raw: str


def read_items(path: Path) -> Iterator[Item | BadLine]:
    """Yield items in file order; a bad line yields a BadLine with an id we can report and resume on."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield BadLine(f"line-{lineno}", f"line {lineno} is not valid JSON: {exc}", line[:200])
                continue
            if not isinstance(data, dict):
                yield BadLine(f"line-{lineno}", f"line {lineno} is not a JSON object", line[:200])
                continue
            try:
                yield Item.model_validate(data)
            except ValidationError as exc:
                fields = ", ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                item_id = data.get("id")
                ident = str(item_id) if isinstance(item_id, (str, int)) and str(item_id) else f"line-{lineno}"
                yield BadLine(ident, f"line {lineno} (id {ident}) is not a valid item: {fields}", line[:200])
