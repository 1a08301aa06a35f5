"""Structured traces: one JSON event a line in DIR/traces.jsonl, written through structlog.

Every event carries the ids of the item it belongs to (item_id, trace_id) and of its place in the
item's tree (span_id, parent_id), taken from a context variable, so code deep inside a graph never
passes ids around and an item's whole tree can be rebuilt from the file. Ids are random and
OpenTelemetry-sized (16-byte trace ids, 8-byte span ids, in hex), so they never repeat across
processes or resumed runs. The events and their fields: docs/traces.md, engine/trace_events.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import orjson
import structlog

from engine.jsonl import repair_tail
from engine.secrets import redact

_ids = random.Random()  # its own generator, seeded from os.urandom: a seeded global `random` cannot repeat ids


def new_span_id() -> str:
    """16 hex digits, never all zeros (OpenTelemetry's invalid span id)."""
    return format(_ids.getrandbits(64) or 1, "016x")


def new_trace_id() -> str:
    """32 hex digits, fresh for each attempt at an item."""
    return format(_ids.getrandbits(128) or 1, "032x")


@dataclass(slots=True)
class Usage:
    """Running totals for an item or a run. `cost_usd` is what was paid: cache hits cost nothing."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_uncached_usd: float = 0.0  # what the calls would cost with no cache: for comparing graphs
    attempts: int = 0  # requests sent to a backend, retries included (cache hits send none)
    failed_attempts: int = 0  # of those, the ones that failed (each retried or ended its call)

    @classmethod
    def of(cls, fields: dict[str, Any] | None) -> "Usage":
        """From a row's `usage` (as `as_dict` wrote it); fields a row lacks count as 0."""
        fields = fields or {}
        return cls(**{k: fields.get(k, 0) for k in cls.__slots__})

    def add(self, other: "Usage") -> None:
        self.calls += other.calls
        self.cache_hits += other.cache_hits
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd
        self.cost_uncached_usd += other.cost_uncached_usd
        self.attempts += other.attempts
        self.failed_attempts += other.failed_attempts

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "cache_hits": self.cache_hits, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost_usd": round(self.cost_usd, 8),
                "cost_uncached_usd": round(self.cost_uncached_usd, 8), "attempts": self.attempts,
                "failed_attempts": self.failed_attempts}


@dataclass(slots=True)
class Span:
    """Where we are in an item's tree. `usage` is shared by every span of one item."""

    item_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_id: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # labels: copied onto every event inside
    usage: Usage = field(default_factory=Usage)
    attrs: dict[str, Any] = field(default_factory=dict)  # this span's own fields, written on its span.end


current_span: ContextVar[Span] = ContextVar("stagewise_span", default=Span())


@contextlib.contextmanager
def item_span(item_id: str, **fields: Any) -> Iterator[Span]:
    """Open the root span of one item: a fresh trace id and a fresh usage counter."""
    span = Span(item_id=item_id, trace_id=new_trace_id(), span_id=new_span_id(), fields=fields)
    token = current_span.set(span)
    try:
        yield span
    finally:
        current_span.reset(token)


@contextlib.contextmanager
def child_span(parent: Span | None = None, **fields: Any) -> Iterator[Span]:
    """Open a child span (a stage, a selection round) of `parent` (default: the current span); its
    fields label every event inside it."""
    parent = parent or current_span.get()
    span = Span(item_id=parent.item_id, trace_id=parent.trace_id, span_id=new_span_id(),
                parent_id=parent.span_id, fields={**parent.fields, **fields}, usage=parent.usage)
    token = current_span.set(span)
    try:
        yield span
    finally:
        current_span.reset(token)


def messages_for_trace(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages as a trace records them: text kept, each image replaced by a short placeholder
    (a data URL would bloat the file; a remote URL may carry a signed token)."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = [_image_placeholder(p) if p.get("type") == "image_url" else p for p in content]
        out.append({**m, "content": content})
    return out


def _image_placeholder(part: dict[str, Any]) -> dict[str, Any]:
    url = (part.get("image_url") or {}).get("url", "")
    what = f"data URL, {len(url)} chars" if url.startswith("data:") else "URL"
    return {"type": "image_url", "image_url": {"url": f"[image: {what}]"}}


def _redact_error(_, __, event: dict[str, Any]) -> dict[str, Any]:
    if event.get("error"):
        event["error"] = redact(str(event["error"]))
    return event


class _LineWriter:
    """structlog's WriteLogger flushes every line (a syscall per event); we flush on our schedule."""

    def __init__(self, file: Any):
        self._write = file.write

    def msg(self, message: str) -> None:
        self._write(message + "\n")

    info = msg


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


class Tracer:
    """Appends events to a JSONL file. Buffered; `flush()` is called whenever an item ends."""

    def __init__(self, path: str | os.PathLike[str] | None, *, prompts: bool = False):
        self.prompts = prompts  # --trace-prompts: llm.call events carry their messages (images as placeholders)
        if path:
            repair_tail(Path(path))  # a line torn by kill -9 would make the file unreadable as JSONL
        self._file = open(path, "a", encoding="utf-8", buffering=1 << 16) if path else None
        self._log = structlog.wrap_logger(
            _LineWriter(self._file) if self._file else structlog.ReturnLogger(),
            processors=[_redact_error, structlog.processors.JSONRenderer(serializer=_dumps)],
        ).bind()  # bind once: the lazy proxy would rebuild the logger on every event
        self._flushed = time.monotonic()

    def event(self, name: str, /, **fields: Any) -> None:
        """Write one event labelled with the current span (explicit fields win)."""
        if self._file is None:
            return
        span = current_span.get()
        # one dict, so an explicit field (item.duplicate's item_id) replaces the span's instead of clashing
        self._log.msg(name, **{"ts": round(time.time(), 4), "item_id": span.item_id, "trace_id": span.trace_id,
                               **span.fields, "span_id": span.span_id, "parent_id": span.parent_id, **fields})

    @contextlib.contextmanager
    def span(self, kind: str, name: str, *, parent: Span | None = None, labels: dict[str, Any] | None = None,
             **attrs: Any) -> Iterator[Span]:
        """A child span that writes `span.end` when it closes: `kind` and `name`, its times, its status,
        `attrs` and whatever the body adds to `span.attrs`. `labels` go on every event inside it."""
        start = time.time()
        status, error = "ok", None
        with child_span(parent, **(labels or {})) as span:
            try:
                yield span
            except BaseException as exc:
                cancelled = isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))
                status, error = ("cancelled", None) if cancelled else ("error", f"{type(exc).__name__}: {exc}")
                raise
            finally:
                self.event("span.end", kind=kind, name=name, start_ts=round(start, 4), end_ts=round(time.time(), 4),
                           status=status, error=error, **{**attrs, **span.attrs})

    def flush(self, every_s: float = 0.0) -> None:
        """Flush now, or (with `every_s`) only if the last flush is older than that."""
        if self._file and (not every_s or time.monotonic() - self._flushed >= every_s):
            self._file.flush()
            self._flushed = time.monotonic()

    def write_lines(self, text: str) -> None:
        """Append events rendered elsewhere (a Ray actor's spool, stagewise/cluster): whole lines."""
        if self._file is not None and text:
            self._file.write(text if text.endswith("\n") else text + "\n")

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None
