"""The batch runner: stream items, solve each with bounded concurrency, append one row per item.

It knows nothing of stages or graphs: it is handed `solve(item, image_url) -> dict` and owns only
what every job needs — reading, resuming, image loading, error rows, results, summary, progress.
An error row names its item and its `error_cause`; an interrupt (cancellation) is never a row, so an
interrupted item simply runs again next time.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

from engine.errors import INPUT_CAUSE, INTERNAL_CAUSE, CallError
from engine.images import DEFAULT_MAX_SIDE, ImageError, load_image
from engine.items import BadLine, Item, read_items
from engine.progress import RunProgress
from engine.results import ResultsFile, ranked
from engine.secrets import redact
from engine.trace import Tracer, Usage, item_span

Solve = Callable[[Item, "str | None"], Awaitable[dict[str, Any]]]


def _image_ref(ref: str | None, base_dir: Path) -> str | None:
    """Rows name local images by absolute path, so a results file is usable from anywhere (trainer/)."""
    if not ref or ref.startswith(("data:", "http://", "https://")) or Path(ref).is_absolute():
        return ref
    return str(base_dir / ref)


def describe_error(item_id: str, exc: Exception) -> tuple[str, str]:
    """(message naming the item and the cause, error_cause) for an exception that ended an item."""
    if isinstance(exc, ImageError):
        return f"item {item_id}: {exc}", exc.cause
    if isinstance(exc, CallError):
        return f"item {item_id}: model call failed ({exc.kind}): {exc}", exc.kind
    return f"item {item_id}: {type(exc).__name__}: {exc}", INTERNAL_CAUSE


def _interrupted() -> bool:
    """True while this task is being cancelled: whatever it raises then is the interrupt's doing."""
    task = asyncio.current_task()
    return task is not None and getattr(task, "cancelling", lambda: 0)() > 0


def count_lines(path: Path) -> int:
    """Lines that hold something (the progress bar's total): blank ones are skipped by the reader, and a
    last line without its newline still counts."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def entries_to_run(items_path: Path, done: set[str], tracer: Tracer) -> Iterator[Item | BadLine]:
    """ITEMS.jsonl's entries not done yet, each id once: a repeated id is traced (item.duplicate) and
    skipped. `done` is read as the iteration goes, so rows finished meanwhile count."""
    seen: set[str] = set()
    for entry in read_items(items_path):
        if entry.id in done:
            continue
        if entry.id in seen:
            tracer.event("item.duplicate", item_id=entry.id)
            continue
        seen.add(entry.id)
        yield entry


async def solve_entry(entry: Item | BadLine, solve: Solve, *, meta: dict[str, Any], tracer: Tracer,
                      base_dir: Path, load_image: Callable[[Item], Awaitable[str]],
                      on_start: Callable[[Usage], None] | None = None,
                      attempt: int = 1) -> tuple[dict[str, Any], Usage]:
    """One entry to its row (and its usage): the item's span, its image, the graph, an error row naming
    the item and its cause. Shared by the local runner and the Ray actors (stagewise/cluster).
    `attempt` is 1 + the error rows of this item that reruns have retried (ResultsFile.attempt)."""
    row: dict[str, Any] = {"id": entry.id, "status": "error", "error": None, "error_cause": None, **meta}
    t0 = time.perf_counter()
    start_ts = round(time.time(), 4)
    with item_span(entry.id, graph=meta.get("graph")) as span:
        tracer.event("item.start", attempt=attempt)
        if on_start is not None:
            on_start(span.usage)  # its calls count on the display as they are made
        if isinstance(entry, BadLine):
            row["error"], row["error_cause"] = entry.error, INPUT_CAUSE
        else:
            row.update(question=entry.question, image=_image_ref(entry.image, base_dir), reference=entry.answer)
            if entry.choices:  # the options the model was shown: training on the row must show them too
                row["choices"] = list(entry.choices)
            try:
                image_url = await load_image(entry) if entry.image else None
                row.update(await solve(entry, image_url))
                row["status"] = "ok"
            except Exception as exc:  # one bad item never sinks the batch
                if _interrupted():
                    raise  # Ctrl-C: not this item's failure; it runs again on resume
                row["error"], row["error_cause"] = describe_error(entry.id, exc)
        row["error"] = redact(row["error"]) if row["error"] else None
        row["usage"] = span.usage.as_dict()
        row["latency_s"] = round(time.perf_counter() - t0, 4)
        tracer.event("item.end", status=row["status"], error=row["error"], error_cause=row["error_cause"],
                     latency_s=row["latency_s"], start_ts=start_ts,
                     **{f"usage_{k}": v for k, v in row["usage"].items()})
    return row, span.usage


def write_summary(out_dir: Path, meta: dict[str, Any], results: ResultsFile, run_usage: Usage, finished: int,
                  started: float) -> dict[str, Any]:
    """DIR/summary.json: the folder's totals (every run) and this run's (`this_run`)."""
    wall_s = round(time.perf_counter() - started, 3)
    summary = {
        **meta,
        "items": len(results.done), **results.totals,
        "errors_by_cause": ranked(results.errors_by_cause),
        "retried": len(results.retrying),
        **results.usage.as_dict(),
        "tokens": results.usage.prompt_tokens + results.usage.completion_tokens,
        "this_run": {**run_usage.as_dict(), "items": finished, "wall_s": wall_s},
        "wall_s": wall_s,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


async def run_items(items_path: Path, out_dir: Path, solve: Solve, *, tracer: Tracer,
                    meta: dict[str, Any], concurrency: int = 32, max_image_side: int = DEFAULT_MAX_SIDE,
                    show_progress: bool = True, retry_errors: str = "retryable") -> dict[str, Any]:
    """Run every item of `items_path` not done yet (error rows that `retry_errors` allows count as not
    done); returns (and writes) DIR/summary.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = await asyncio.to_thread(ResultsFile, out_dir / "results.jsonl", retry_errors)
    base_dir = items_path.resolve().parent
    started = time.perf_counter()
    run_usage = Usage()
    progress = RunProgress(total=await asyncio.to_thread(count_lines, items_path),
                           done=len(results.done), enabled=show_progress)

    async def process(entry: Item | BadLine) -> None:
        row, usage = await solve_entry(entry, solve, meta=meta, tracer=tracer, base_dir=base_dir,
                                       load_image=loader, on_start=progress.start,
                                       attempt=results.attempt(entry.id))
        tracer.flush()  # before its row: an item with a row has its whole tree on disk, even after kill -9
        results.append(row)
        run_usage.add(usage)
        progress.advance(ok=row["status"] == "ok", usage=usage)

    async def loader(entry: Item) -> str:
        return await load_image(entry.image, base_dir, max_image_side)

    entries = entries_to_run(items_path, results.done, tracer)

    async def worker() -> None:
        for entry in entries:  # shared iterator: each worker pulls the next line when it is free
            await process(entry)

    try:
        with progress:
            await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        summary = write_summary(out_dir, meta, results, run_usage, progress.finished, started)
        results.close()
        tracer.flush()
    return summary
