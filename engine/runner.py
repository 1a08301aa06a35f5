"""The batch runner: stream items, solve each with bounded concurrency, append one row per item.

It knows nothing of stages or graphs: it is handed `solve(item, image_url) -> dict` and owns only
what every job needs — reading, resuming, image loading, error rows, results, summary, progress.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson

from engine.errors import CallError
from engine.images import DEFAULT_MAX_SIDE, ImageError, load_image_data_url
from engine.items import BadLine, Item, read_items
from engine.progress import RunProgress
from engine.secrets import redact
from engine.trace import Tracer, Usage, item_span

Solve = Callable[[Item, "str | None"], Awaitable[dict[str, Any]]]


class ResultsFile:
    """DIR/results.jsonl: append-only, one flushed line per finished item; knows which ids are done."""

    def __init__(self, path: Path):
        self.path = path
        self.done: set[str] = set()
        self.totals = {"ok": 0, "error": 0}
        self.usage = Usage()
        if path.exists():
            self._load()
        self._file = open(path, "a", encoding="utf-8", buffering=1 << 20)
        self._flush_scheduled = False

    def _load(self) -> None:
        with open(self.path, "rb") as f:
            data = f.read()
        for line in data.splitlines():
            try:
                row = orjson.loads(line)
                row_id = row["id"]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash: that item is simply run again
            if row_id not in self.done:
                self._count(row)
        if data and not data.endswith(b"\n"):
            with open(self.path, "ab") as f:
                f.write(b"\n")

    def _count(self, row: dict[str, Any]) -> None:
        self.done.add(row["id"])
        self.totals["ok" if row.get("status") == "ok" else "error"] += 1
        usage = row.get("usage") or {}
        self.usage.add(Usage(**{k: usage.get(k, 0) for k in Usage.__slots__}))

    def append(self, row: dict[str, Any]) -> None:
        """Write the row and flush before the event loop runs anything else (rows that finish in the
        same loop pass share one write)."""
        self._file.write(orjson.dumps(row).decode() + "\n")
        self._count(row)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _image_ref(ref: str | None, base_dir: Path) -> str | None:
    """Rows name local images by absolute path, so a results file is usable from anywhere (trainer/)."""
    if not ref or ref.startswith(("data:", "http://", "https://")) or Path(ref).is_absolute():
        return ref
    return str(base_dir / ref)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


async def run_items(items_path: Path, out_dir: Path, solve: Solve, *, tracer: Tracer,
                    meta: dict[str, Any], concurrency: int = 32, max_image_side: int = DEFAULT_MAX_SIDE,
                    show_progress: bool = True) -> dict[str, Any]:
    """Run every not-yet-done item of `items_path`; returns (and writes) DIR/summary.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = ResultsFile(out_dir / "results.jsonl")
    base_dir = items_path.resolve().parent
    started = time.perf_counter()
    run_usage = Usage()
    seen: set[str] = set()
    progress = RunProgress(total=await asyncio.to_thread(_count_lines, items_path),
                           done=len(results.done), enabled=show_progress)

    async def process(entry: Item | BadLine) -> None:
        row: dict[str, Any] = {"id": entry.id, "status": "error", "error": None, **meta}
        t0 = time.perf_counter()
        with item_span(entry.id, graph=meta.get("graph")) as span:
            progress.start(span.usage)  # its calls count on the display as they are made
            if isinstance(entry, BadLine):
                row["error"] = entry.error
            else:
                row.update(question=entry.question, image=_image_ref(entry.image, base_dir),
                           reference=entry.answer)
                try:
                    image_url = None
                    if entry.image:
                        image_url = await asyncio.to_thread(load_image_data_url, entry.image, base_dir,
                                                            max_image_side)
                    row.update(await solve(entry, image_url))
                    row["status"] = "ok"
                except ImageError as exc:
                    row["error"] = f"item {entry.id}: {exc}"
                except CallError as exc:
                    row["error"] = f"item {entry.id}: model call failed ({exc.kind}): {exc}"
                except Exception as exc:  # one bad item never sinks the batch
                    row["error"] = f"item {entry.id}: {type(exc).__name__}: {exc}"
            row["error"] = redact(row["error"]) if row["error"] else None
            row["usage"] = span.usage.as_dict()
            row["latency_s"] = round(time.perf_counter() - t0, 4)
            tracer.event("item.end", status=row["status"], error=row["error"],
                         latency_s=row["latency_s"], **{f"usage_{k}": v for k, v in row["usage"].items()})
        tracer.flush(every_s=0.5)  # traces are logs: flushed twice a second, rows at once
        results.append(row)
        run_usage.add(span.usage)
        progress.advance(ok=row["status"] == "ok", usage=span.usage)

    entries = iter(read_items(items_path))

    async def worker() -> None:
        for entry in entries:  # shared iterator: each worker pulls the next line when it is free
            if entry.id in results.done:
                continue
            if entry.id in seen:
                tracer.event("item.duplicate", item_id=entry.id)
                continue
            seen.add(entry.id)
            await process(entry)

    try:
        with progress:
            await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        summary = {
            **meta,
            "items": len(results.done), **results.totals,
            **{k: v for k, v in results.usage.as_dict().items()},
            "tokens": results.usage.prompt_tokens + results.usage.completion_tokens,
            "this_run": {**run_usage.as_dict(), "items": progress.finished,
                         "wall_s": round(time.perf_counter() - started, 3)},
            "wall_s": round(time.perf_counter() - started, 3),
        }
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        results.close()
        tracer.flush()
    return summary
