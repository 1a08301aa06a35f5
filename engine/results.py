"""DIR/results.jsonl: one row per item, append-only, each row flushed as its item ends.

On opening, rows whose error a rerun can repair are moved out so those items run again: they are
appended (fsynced) to DIR/retried.jsonl first, then results.jsonl is rewritten without them atomically
(new file, fsync, rename). A kill -9 at any moment leaves every finished row in results.jsonl, and
each id appears there once. Which errors are retried is the caller's `retry_errors` policy:

- "retryable" (default): the provider's or the network's (rate limits, timeouts, refused connections,
  server errors, unreadable replies, rejected requests) — a fixed URL, key or quota makes them pass;
- "all": input errors (a malformed line, a missing or corrupt image) and internal ones too;
- "none": nothing; every row stays as it is.
"""
from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from engine.errors import RETRYABLE_CAUSES
from engine.jsonl import append_durably, repair_tail, replace_atomically
from engine.trace import Usage

RETRY_POLICIES = ("retryable", "all", "none")
_OLD_CAUSE = re.compile(r"model call failed \((\w+)\)")


def error_cause(row: dict[str, Any]) -> str:
    """The row's `error_cause`; rows written before causes were recorded are read from their message."""
    if row.get("error_cause"):
        return row["error_cause"]
    m = _OLD_CAUSE.search(row.get("error") or "")
    return m.group(1) if m else "unknown"


def should_retry(row: dict[str, Any], policy: str) -> bool:
    if row.get("status") == "ok" or policy == "none":
        return False
    return policy == "all" or error_cause(row) in RETRYABLE_CAUSES


def ranked(counts: Counter[str]) -> dict[str, int]:
    """Causes by count, most first, ties by name: the same order in summary.json and on stderr."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class ResultsFile:
    """The rows written so far: which ids are done, totals, errors by cause; appends new rows."""

    def __init__(self, path: Path, retry_errors: str = "retryable"):
        if retry_errors not in RETRY_POLICIES:
            raise ValueError(f"retry_errors must be one of {RETRY_POLICIES}, not {retry_errors!r}")
        self.path = path
        self.retried_path = path.with_name("retried.jsonl")
        self.done: set[str] = set()
        self.retrying: set[str] = set()  # ids whose error rows were moved out to run again
        self.retried_rows: Counter[str] = Counter()  # per id, its error rows moved out by every rerun so far
        self.totals = {"ok": 0, "error": 0}
        self.errors_by_cause: Counter[str] = Counter()
        self.usage = Usage()  # everything spent on this folder's items, retried rows' attempts included
        repair_tail(self.retried_path)  # before a move appends to it
        retried = self.retried_path.read_bytes().splitlines() if self.retried_path.exists() else []
        # A kill -9 between a move's append and its rename leaves rows in both files: the move is then
        # redone without appending them again, and each row, in either file, counts once.
        counted = set()
        if path.exists():
            repair_tail(path)
            counted = self._load(retry_errors, retried)
        for line in retried:
            if line in counted:
                continue
            counted.add(line)
            try:
                row = orjson.loads(line)
                self.usage.add(Usage.of(row.get("usage")))
                self.retried_rows[row["id"]] += 1
            except (ValueError, TypeError, KeyError):
                continue
        self._file = open(path, "a", encoding="utf-8", buffering=1 << 20)
        self._flush_scheduled = False

    def _load(self, policy: str, retried: list[bytes]) -> set[bytes]:
        """Count the rows kept and move out the ones to retry, appending them to `retried` (retried.jsonl's
        lines); returns the kept lines that retried.jsonl also holds (counted here already). The file is
        streamed, twice only when it must be rewritten: a resumed 100k-row run holds ids, not rows."""
        in_retried = set(retried)
        moved: list[bytes] = []
        dropped: set[int] = set()  # line numbers a rewrite leaves out
        kept_in_both: set[bytes] = set()
        rewrite = False
        with open(self.path, "rb") as f:
            for number, line in enumerate(f):
                try:
                    row = orjson.loads(line)
                    row_id = row["id"]
                except (ValueError, KeyError, TypeError):
                    rewrite = rewrite or bool(line.strip())  # not a row: nothing to keep
                    dropped.add(number)
                    continue
                if row_id in self.done or row_id in self.retrying:
                    rewrite = True  # a second row for one id: the first one counts
                    dropped.add(number)
                    continue
                bare = line.rstrip(b"\r\n")
                if should_retry(row, policy):
                    self.retrying.add(row_id)
                    if bare not in in_retried:
                        moved.append(line)
                        retried.append(bare)
                    rewrite = True
                    dropped.add(number)
                    continue
                self._count(row)
                if bare in in_retried:
                    kept_in_both.add(bare)
        if moved:
            append_durably(self.retried_path, moved)
        if rewrite:
            with open(self.path, "rb") as f:
                replace_atomically(self.path, (line for number, line in enumerate(f) if number not in dropped))
        return kept_in_both

    def _count(self, row: dict[str, Any]) -> None:
        self.done.add(row["id"])
        ok = row.get("status") == "ok"
        self.totals["ok" if ok else "error"] += 1
        if not ok:
            self.errors_by_cause[error_cause(row)] += 1
        self.usage.add(Usage.of(row.get("usage")))

    def attempt(self, item_id: str) -> int:
        """Which attempt at this item a run now makes: 1, or 1 + its error rows that were retried."""
        return 1 + self.retried_rows[item_id]

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
