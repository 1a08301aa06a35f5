"""ITEMS.jsonl: read lazily, one validated item at a time (100k lines are never held at once)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import orjson

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator


MAX_CHOICES = 26  # options are shown lettered A to Z


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

    @field_validator("id")
    @classmethod
    def _id_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("an id must not be blank")
        return v

    @field_validator("image")
    @classmethod
    def _image_not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("an image must name a file or URL (leave the field out for none)")
        return v

    @field_validator("choices")
    @classmethod
    def _lettered(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(v) > MAX_CHOICES:
            raise ValueError(f"{len(v)} choices: at most {MAX_CHOICES}, lettered A to Z")
        return v

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


_BOM = b"\xef\xbb\xbf"


def _given_id(data: dict) -> str | None:
    """The id a line gives, as the item (or its error row) takes it; None when it gives no usable one."""
    v = data.get("id")
    return str(v) if isinstance(v, (str, int)) and str(v).strip() else None


def _ids_like_line_ids(path: Path) -> set[str]:
    """Ids the file itself gives that look like `line-N`, so a bad line's made-up id can avoid them."""
    taken = set()
    with open(path, "rb") as f:
        for raw in f:
            if b"line-" not in raw and b"\\u" not in raw:  # such an id is in the bytes, or \u-escaped
                continue
            try:
                data = orjson.loads(raw.removeprefix(_BOM))
            except orjson.JSONDecodeError:
                continue
            ident = _given_id(data) if isinstance(data, dict) else None
            if ident and ident.startswith("line-"):
                taken.add(ident)
    return taken


def read_items(path: Path) -> Iterator[Item | BadLine]:
    """Yield items in file order; a bad line yields a BadLine with an id we can report and resume on.
    Lines are decoded one by one, so undecodable bytes spoil only their own line."""
    taken: set[str] | None = None  # the file's own line-N ids, read at the first bad line only

    def line_id(lineno: int) -> str:
        """`line-N` for a line with no usable id, suffixed (`line-N#2`, ...) if a real id already is that:
        every bad line gets its own row, and a real item is never skipped as its duplicate."""
        nonlocal taken
        if taken is None:
            taken = _ids_like_line_ids(path)
        ident, k = f"line-{lineno}", 1
        while ident in taken:
            k += 1
            ident = f"line-{lineno}#{k}"
        return ident

    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1:
                raw = raw.removeprefix(_BOM)  # editors on Windows start files with one
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield BadLine(line_id(lineno), f"line {lineno} is not valid UTF-8: {exc}",
                              raw[:200].decode("utf-8", "replace"))
                continue
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield BadLine(line_id(lineno), f"line {lineno} is not valid JSON: {exc}", line[:200])
                continue
            if not isinstance(data, dict):
                yield BadLine(line_id(lineno), f"line {lineno} is not a JSON object", line[:200])
                continue
            try:
                yield Item.model_validate(data)
            except ValidationError as exc:
                fields = ", ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                ident = _given_id(data) or line_id(lineno)
                yield BadLine(ident, f"line {lineno} (id {ident}) is not a valid item: {fields}", line[:200])
