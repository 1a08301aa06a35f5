"""The Ray Data UDF: one async actor owns one engine (clients, limits, cache, graph) and solves batches.

The engine is built on the first batch, inside the actor's own event loop: asyncio objects made in
`__init__` would belong to another loop (ray#47734). A batch's items run concurrently (at most
--items-in-flight per actor, across batches) through engine/runner.py's `solve_entry`, the local
path's own per-item code, and the batch yields its rows once, when all are done: a yield per row
breaks Ray Data's memory accounting (ray#65038). Before yielding, the calls it made are on disk in
the cache, so a rerun of the batch (this actor killed) pays only for the calls not finished. The
actor's trace events are spooled to a local file and each item's ship with its row; the driver
writes them to DIR/traces.jsonl.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import os
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator

import orjson

from engine.cache import Cache
from engine.images import ImageError
from engine.items import Item
from engine.runner import solve_entry
from engine.trace import Tracer
from search import GraphSpec
from stagewise.cluster.shared_limits import ClusterLimits
from stagewise.jobs import Job


def api_base_for(api_base: str | None, index: int) -> str | None:
    """Several comma-separated --api-base (or --judge-api-base) URLs, one server per GPU: actor i uses
    the i-th, round robin."""
    bases = [b.strip() for b in (api_base or "").split(",") if b.strip()]
    return bases[index % len(bases)] if bases else None


class EngineActor:
    def __init__(self, args: argparse.Namespace, spec: GraphSpec, limiter: Any, base_dir: str,
                 cache_path: str | None):
        self._args, self._spec, self._limiter = args, spec, limiter
        self._base_dir, self._cache_path = Path(base_dir), cache_path
        self._ready: asyncio.Task[None] | None = None  # made on the first batch, in the actor's loop

    async def _build(self) -> None:
        args = copy.copy(self._args)
        index = await self._limiter.join.remote(os.getpid())
        args.api_base = api_base_for(args.api_base, index)
        args.judge_api_base = api_base_for(args.judge_api_base, index)
        job = Job(args, self._spec)
        self._meta = job.meta
        self._spool = Path(tempfile.mkdtemp(prefix="stagewise-actor-")) / "traces.jsonl"
        self._tracer = Tracer(self._spool, prompts=getattr(args, "trace_prompts", False))
        self._spool_read = 0
        self._held: dict[str | None, list[bytes]] = {}  # item id → its events not shipped yet
        self._cache = Cache(self._cache_path) if self._cache_path else None
        capped = bool(args.rpm or args.tpm)
        self._solve, self._clients = job.build(
            self._tracer, self._cache,
            limits_for=lambda account: ClusterLimits(self._limiter, account, args.concurrency, capped))
        self._slots = asyncio.Semaphore(args.items_in_flight or args.concurrency)

    async def __call__(self, batch: dict[str, Any]) -> AsyncIterator[dict[str, list[str]]]:
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._build())
        await asyncio.shield(self._ready)
        entries = list(zip(batch["line"].tolist(), batch["image_url"].tolist(), batch["image_error"].tolist(),
                           batch["image_error_cause"].tolist(), batch["attempt"].tolist()))
        rows = await asyncio.gather(*(self._one(*e) for e in entries))
        while self._cache is not None and self._cache.unwritten:  # its calls on disk before its rows leave
            await asyncio.sleep(0.005)
        yield {"id": [r["id"] for r in rows], "row": [orjson.dumps(r).decode() for r in rows],
               "traces": [self._traces_of([r["id"] for r in rows])] + [""] * (len(rows) - 1)}

    async def _one(self, line: str, image_url: str, image_error: str, image_error_cause: str,
                   attempt: int) -> dict[str, Any]:
        item = Item.model_validate_json(line)

        async def preloaded(_: Item) -> str:  # loaded on the driver's node (stagewise/cluster/prepare.py)
            if image_error:
                raise ImageError(image_error, image_error_cause)
            return image_url

        async with self._slots:
            row, _ = await solve_entry(item, self._solve, meta=self._meta, tracer=self._tracer,
                                       base_dir=self._base_dir, load_image=preloaded, attempt=int(attempt))
        return row

    def _traces_of(self, ids: list[str]) -> str:
        """The events of these items (read from the spool; other batches' wait for their own rows): a
        batch killed with its actor takes its events with it, so each item's events come from the one
        attempt whose row the driver writes."""
        self._tracer.flush()
        with open(self._spool, "rb") as f:
            f.seek(self._spool_read)
            data = f.read()
        cut = data.rfind(b"\n") + 1  # whole lines only; a partial one waits for the next batch
        self._spool_read += cut
        if cut == len(data):  # all read: start the spool afresh (the tracer appends; nothing writes meanwhile)
            os.truncate(self._spool, 0)
            self._spool_read = 0
        for line in data[:cut].splitlines(keepends=True):
            self._held.setdefault(orjson.loads(line).get("item_id"), []).append(line)
        out = self._held.pop(None, [])
        for item_id in ids:
            out.extend(self._held.pop(item_id, ()))
        return b"".join(out).decode()
