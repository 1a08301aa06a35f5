"""Request-level response cache in SQLite.

Key = sha256 of the canonical request (model, messages, sampling parameters other than `n`, the
logprobs asked) plus the sample index, so best-of-N keeps N distinct replayable samples and asking for
more samples later reuses the ones already paid for. A sample's token logprobs are stored with it, so
a replayed verdict reads the same. Nothing secret is ever part of the request we hash: keys and bases
live in the backend, not in the request.

Writes go through one background thread that wakes every few milliseconds and commits whatever has
queued up in one transaction, so a busy run pays one commit per batch instead of one per call (and
the event loop never hands the GIL to a woken thread per put); until it is written an entry is served
from memory, and once written it is dropped from memory. A file locked by another process (a shared
`--cache`) makes the writer wait and retry with back-off, warning once; no queued row is dropped.
WAL mode: a crash loses at most the entries still queued (milliseconds), never the file. Lookups stay
on the event loop: WAL readers never wait for a writer, and a lookup costs tens of microseconds (a
4-sample hit on disk ~160 µs on a loaded 2-core machine, bench/cache.py), less than a hop to a thread
and far less than the call it saves.
"""
from __future__ import annotations

import hashlib
import orjson
import queue
import sqlite3
import threading
import time
import warnings
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
    if request.logprobs:  # only then, so keys of requests without logprobs stay what they were
        canonical["logprobs"] = request.logprobs
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _completion(value: str) -> Completion:
    """A stored sample as it was returned: its token logprobs too (a replayed verdict reads the same)."""
    fields = orjson.loads(value)
    if fields.get("logprobs") is not None:
        fields["logprobs"] = [(token, top) for token, top in fields["logprobs"]]
    return Completion(**fields, cached=True)


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    return db


WRITE_WAIT_S = 0.25  # sqlite's own wait for a lock before our back-off takes over
MAX_BACKOFF_S = 2.0


class Cache:
    def __init__(self, path: str | Path):
        self._path = str(path)
        self._db = _connect(self._path)
        # A fresh cache cannot hold anything we did not put this run: skip the disk until a write lands.
        self._skip_disk = self._db.execute("SELECT 1 FROM completions LIMIT 1").fetchone() is None
        self._pending: dict[str, str] = {}  # put this run and not yet on disk
        self._pending_lock = threading.Lock()  # put() and the writer's pruning, never get()
        self._warned = False
        self._queue: queue.SimpleQueue[list[tuple[str, str]] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="stagewise-cache", daemon=True)
        self._writer.start()

    def get(self, key: str, n: int) -> list[Completion | None]:
        """Samples 0..n-1 of a request; None where a sample is not cached."""
        keys = [f"{key}:{i}" for i in range(n)]
        found = {k: v for k in keys if (v := self._pending.get(k)) is not None}
        if len(found) < n and not self._skip_disk:
            marks = ",".join("?" * n)
            found.update(self._db.execute(f"SELECT key, value FROM completions WHERE key IN ({marks})", keys))
        return [None if (v := found.get(k)) is None else _completion(v) for k in keys]

    def put(self, key: str, samples: dict[int, Completion]) -> None:
        rows = [(f"{key}:{i}", orjson.dumps({"text": c.text, "finish_reason": c.finish_reason,
                                            "prompt_tokens": c.prompt_tokens,
                                            "completion_tokens": c.completion_tokens,
                                            "cost_usd": c.cost_usd,
                                            **({"logprobs": c.logprobs} if c.logprobs is not None else {})
                                            }).decode())
                for i, c in samples.items()]
        with self._pending_lock:
            self._pending.update(rows)
        self._queue.put(rows)

    @property
    def unwritten(self) -> int:
        """Rows put this run that are not on disk yet."""
        return len(self._pending)

    def _write_loop(self, every_s: float = 0.02) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=WRITE_WAIT_S)
        db.execute("PRAGMA synchronous=NORMAL")
        rows: list[tuple[str, str]] = []
        closing, failures = False, 0
        while True:
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    closing = True
                else:
                    rows.extend(item)
            if rows:
                try:
                    db.execute("BEGIN")
                    db.executemany("INSERT OR REPLACE INTO completions VALUES (?, ?)", rows)
                    db.execute("COMMIT")
                except sqlite3.Error as exc:  # locked by another process, disk full...: keep the rows, retry
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    failures += 1
                    self._warn_once(exc, len(rows))
                    time.sleep(min(MAX_BACKOFF_S, every_s * 2 ** failures))
                    continue
                failures = 0
                self._skip_disk = False  # before pruning: a lookup that misses memory must find them on disk
                self._prune(rows)
                rows = []
            if closing:
                db.close()
                return
            time.sleep(every_s)

    def _prune(self, written: list[tuple[str, str]]) -> None:
        with self._pending_lock:
            for key, value in written:
                if self._pending.get(key) is value:  # not replaced by a newer put meanwhile
                    del self._pending[key]

    def _warn_once(self, exc: sqlite3.Error, waiting: int) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"cache {self._path}: cannot write ({exc}); {waiting} rows wait in memory and are "
                          f"retried until the file is free", RuntimeWarning, stacklevel=2)

    def close(self) -> None:
        """Write everything still queued (waiting for a locked file as long as it takes), then close."""
        self._queue.put(None)
        self._writer.join()
        self._db.close()
