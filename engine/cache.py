"""Request-level response cache in SQLite.

Key = sha256 of the canonical request (model, messages, sampling parameters other than `n`) plus the
sample index, so best-of-N keeps N distinct replayable samples and asking for more samples later
reuses the ones already paid for. Nothing secret is ever part of the request we hash: keys and bases
live in the backend, not in the request.

Writes go through one background thread that wakes every few milliseconds and commits whatever has
queued up in one transaction, so a busy run pays one commit per batch instead of one per call (and
the event loop never hands the GIL to a woken thread per put); until it is written an entry is served
from memory. WAL mode: a crash loses at most the entries still queued (milliseconds), never the file.
"""
from __future__ import annotations

import hashlib
import orjson
import queue
import sqlite3
import threading
import time
from pathlib import Path

from engine.types import Completion, Request


def request_key(model: str, request: Request) -> str:
    canonical = {
        "model": model,
        "messages": request.messages,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_tokens,
        "stop": list(request.stop),
        "seed": request.seed,
        "continue_final": request.continue_final,
    }
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    return db


class Cache:
    def __init__(self, path: str | Path):
        self._path = str(path)
        self._db = _connect(self._path)
        # A fresh cache cannot hold anything we did not put this run: skip the lookups entirely.
        self._empty_at_start = self._db.execute("SELECT 1 FROM completions LIMIT 1").fetchone() is None
        self._pending: dict[str, str] = {}  # written this run, maybe not yet on disk
        self._queue: queue.SimpleQueue[list[tuple[str, str]] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="stagewise-cache", daemon=True)
        self._writer.start()

    def get(self, key: str, n: int) -> list[Completion | None]:
        """Samples 0..n-1 of a request; None where a sample is not cached."""
        keys = [f"{key}:{i}" for i in range(n)]
        found = {k: self._pending[k] for k in keys if k in self._pending}
        if len(found) < n and not self._empty_at_start:
            marks = ",".join("?" * n)
            found.update(self._db.execute(f"SELECT key, value FROM completions WHERE key IN ({marks})", keys))
        return [None if (v := found.get(k)) is None else Completion(**orjson.loads(v), cached=True) for k in keys]

    def put(self, key: str, samples: dict[int, Completion]) -> None:
        rows = [(f"{key}:{i}", orjson.dumps({"text": c.text, "finish_reason": c.finish_reason,
                                            "prompt_tokens": c.prompt_tokens,
                                            "completion_tokens": c.completion_tokens,
                                            "cost_usd": c.cost_usd}).decode())
                for i, c in samples.items()]
        self._pending.update(rows)
        self._queue.put(rows)

    def _write_loop(self, every_s: float = 0.02) -> None:
        db = _connect(self._path)
        while True:
            batch = []
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if not batch:
                time.sleep(every_s)
                continue
            rows = [row for rows in batch if rows is not None for row in rows]
            if rows:
                db.execute("BEGIN")
                db.executemany("INSERT OR REPLACE INTO completions VALUES (?, ?)", rows)
                db.execute("COMMIT")
            if None in batch:
                db.close()
                return

    def close(self) -> None:
        """Write everything still queued, then close."""
        self._queue.put(None)
        self._writer.join()
        self._db.close()
