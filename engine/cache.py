"""Request-level response cache in SQLite.

Key = sha256 of the canonical request (model, messages, sampling parameters other than `n`) plus the
sample index, so best-of-N keeps N distinct replayable samples and asking for more samples later
reuses the ones already paid for. Nothing secret is ever part of the request we hash: keys and bases
live in the backend, not in the request.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
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
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class Cache:
    """One SQLite file; WAL so a crash loses at most the last transaction, never the file."""

    def __init__(self, path: str | Path):
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def get(self, key: str, n: int) -> list[Completion | None]:
        """Samples 0..n-1 of a request; None where a sample is not cached."""
        keys = [f"{key}:{i}" for i in range(n)]
        marks = ",".join("?" * n)
        found = dict(self._db.execute(f"SELECT key, value FROM completions WHERE key IN ({marks})", keys))
        out: list[Completion | None] = []
        for k in keys:
            value = found.get(k)
            out.append(None if value is None else Completion(**json.loads(value), cached=True))
        return out

    def put(self, key: str, samples: dict[int, Completion]) -> None:
        rows = [(f"{key}:{i}", json.dumps({"text": c.text, "finish_reason": c.finish_reason,
                                            "prompt_tokens": c.prompt_tokens,
                                            "completion_tokens": c.completion_tokens,
                                            "cost_usd": c.cost_usd}))
                for i, c in samples.items()]
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO completions VALUES (?, ?)", rows)
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
