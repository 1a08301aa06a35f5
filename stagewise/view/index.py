"""The view's index: where each item's row and trace lines sit in a run folder, kept in SQLite.

A 100k-item run holds gigabytes of traces, and the viewer must answer a list page or one item without
reading them. DIR/.view-index.sqlite keeps, per item, the byte offset of its row and of each of its
trace lines, plus the columns the list filters and sorts on. It is built once, then brought up to date
by reading only what was appended since (a resumed run appends). A file that shrank or was replaced (a
rerun rewrites results.jsonl without the rows it retries; a torn trace line is cut) is indexed again
from its start.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from array import array
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import orjson

from stagewise.view.folder import RESULTS, TRACES, RunFolder

INDEX_NAME = ".view-index.sqlite"
SCHEMA_VERSION = "1"
_HEAD = 256  # bytes of a file's start kept to notice it was replaced by another of the same size or more

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files(graph TEXT, kind TEXT, inode INTEGER, size INTEGER, head BLOB,
                                 PRIMARY KEY(graph, kind));
CREATE TABLE IF NOT EXISTS items(graph TEXT, id TEXT, off INTEGER, len INTEGER, status TEXT, correct INTEGER,
                                 cause TEXT, cost REAL, latency REAL, calls INTEGER, tokens INTEGER,
                                 question TEXT, answer TEXT, reference TEXT, search TEXT,
                                 PRIMARY KEY(graph, id));
CREATE INDEX IF NOT EXISTS items_id ON items(id);
CREATE INDEX IF NOT EXISTS items_cost ON items(cost);
CREATE INDEX IF NOT EXISTS items_latency ON items(latency);
CREATE INDEX IF NOT EXISTS items_calls ON items(calls);
CREATE TABLE IF NOT EXISTS lines(graph TEXT, item_id TEXT, offsets BLOB);
CREATE INDEX IF NOT EXISTS lines_item ON lines(graph, item_id);
CREATE TABLE IF NOT EXISTS trouble(graph TEXT, item_id TEXT, stage TEXT, source TEXT,
                                   PRIMARY KEY(graph, item_id, stage, source)) WITHOUT ROWID;
"""

SORTS = {"cost": "cost", "latency": "latency", "calls": "calls", "tokens": "tokens", "id": "id"}
MAX_PER_PAGE = 200


def _complete_lines(path: Path, start: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) for each whole line from `start`; a last line still being written is left for later."""
    with open(path, "rb") as f:
        f.seek(start)
        offset = start
        for line in f:
            if not line.endswith(b"\n"):
                return
            yield offset, line
            offset += len(line)


# A line holding none of these shows no trouble, so it need not be parsed. They cannot occur inside a
# JSON string value, where every quote is escaped.
_TROUBLE_MARKERS = (b'"status":"retry"', b'"status":"error"', b'"event":"llm.fallback"', b'"parse":"fallback"',
                    b'"parse":"forfeit"')
_ITEM_KEY = b'"item_id":"'


def _quick_item_id(line: bytes) -> str | None:
    """The line's item_id without parsing the line (traces are most of a run's bytes); None when it is
    not a plain string (then the line is parsed)."""
    at = line.find(_ITEM_KEY)
    if at < 0:
        return None
    start = at + len(_ITEM_KEY)
    stop = line.find(b'"', start)
    value = line[start:stop]
    if stop < 0 or b"\\" in value:
        return None
    return value.decode("utf-8", "replace")


def _trouble_stage(event: dict[str, Any]) -> str | None:
    """The stage an event shows trouble at: a failed or retried call, a verdict not read cleanly."""
    name = event.get("event")
    if name == "llm.call" and event.get("status") in ("retry", "error"):
        return event.get("stage") or "?"
    if name == "llm.fallback":
        return event.get("stage") or "?"
    if name == "judge.verdict" and event.get("parse") in ("fallback", "forfeit"):
        return event.get("stage") or "?"
    return None


def _number(value: Any, kind: type) -> float | int | None:
    """A column's number: 0 when absent, None when the row holds something else (a hand-edited "n/a"
    must cost that cell, not the view)."""
    if value is None:
        return kind(0)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = kind(value)
        except (ValueError, OverflowError):  # int(nan), int(inf)
            return None
        return number if kind is float or abs(number) < 2 ** 63 else None  # SQLite's INTEGER
    return None


def _row_columns(graph: str, off: int, line: bytes, row: dict[str, Any]) -> tuple:
    usage = row.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    correct = row.get("correct")
    question, answer, reference = (str(row.get(k) or "") for k in ("question", "answer", "reference"))
    prompt, completion = _number(usage.get("prompt_tokens"), int), _number(usage.get("completion_tokens"), int)
    return (graph, str(row["id"]), off, len(line), _text(row.get("status")),
            None if correct is None else int(bool(correct)), _text(row.get("error_cause")),
            _number(usage.get("cost_usd"), float), _number(row.get("latency_s"), float),
            _number(usage.get("calls"), int), None if prompt is None or completion is None else prompt + completion,
            question, answer, reference, " ".join((str(row["id"]), question, answer, str(row.get("error") or ""))).lower())


def _text(value: Any) -> str | None:
    """A text column: SQLite cannot bind a list or an object."""
    return value if value is None or isinstance(value, str) else str(value)


class Index:
    """Reads and refreshes DIR/.view-index.sqlite. Safe to share between threads (one lock)."""

    def __init__(self, folder: RunFolder, path: Path | None = None):
        self.folder = folder
        self.path = path or folder.root / INDEX_NAME
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")  # a lost index is rebuilt, never trusted half-written
        version = self._meta("version")
        if version not in (None, SCHEMA_VERSION):
            self._drop()
        self._db.executescript(SCHEMA)
        self._db.execute("INSERT OR REPLACE INTO meta VALUES('version', ?)", (SCHEMA_VERSION,))

    def _meta(self, key: str) -> str | None:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        except sqlite3.OperationalError:
            return None
        return row[0] if row else None

    def _drop(self) -> None:
        for table in ("meta", "files", "items", "lines", "trouble"):
            self._db.execute(f"DROP TABLE IF EXISTS {table}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- building ----------------------------------------------------------------------------------

    def refresh(self) -> dict[str, int]:
        """Index what was written since the last refresh; returns the lines read per file kind."""
        read = {"rows": 0, "trace_lines": 0}
        with self._lock:
            for graph, folder in self.folder.graphs.items():
                read["rows"] += self._refresh_file(graph, "results", folder / RESULTS, self._index_rows)
                read["trace_lines"] += self._refresh_file(graph, "traces", folder / TRACES, self._index_traces)
        return read

    def _refresh_file(self, graph: str, kind: str, path: Path, index) -> int:
        try:
            st = path.stat()
            with open(path, "rb") as f:
                head = f.read(_HEAD)
        except OSError:
            return 0
        known = self._db.execute("SELECT inode, size, head FROM files WHERE graph=? AND kind=?", (graph, kind)).fetchone()
        start = 0
        if known:
            inode, size, old_head = known
            if inode == st.st_ino and st.st_size >= size and head[:len(old_head)] == old_head:
                if st.st_size == size:
                    return 0
                start = size
        self._db.execute("BEGIN")
        try:
            if start == 0:
                self._forget(graph, kind)
            end, count = index(graph, path, start)
            self._db.execute("INSERT OR REPLACE INTO files VALUES(?,?,?,?,?)",
                             (graph, kind, st.st_ino, end, head[:min(_HEAD, end)]))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return count

    def _forget(self, graph: str, kind: str) -> None:
        if kind == "results":
            self._db.execute("DELETE FROM items WHERE graph=?", (graph,))
            self._db.execute("DELETE FROM trouble WHERE graph=? AND source='row'", (graph,))
        else:
            self._db.execute("DELETE FROM lines WHERE graph=?", (graph,))
            self._db.execute("DELETE FROM trouble WHERE graph=? AND source='trace'", (graph,))

    def _index_rows(self, graph: str, path: Path, start: int) -> tuple[int, int]:
        rows, trouble, end, count = [], [], start, 0
        for off, line in _complete_lines(path, start):
            end = off + len(line)
            try:
                row = orjson.loads(line)
                row["id"]
            except (ValueError, KeyError, TypeError):
                continue
            rows.append(_row_columns(graph, off, line, row))
            repairs = row.get("repairs")
            for repair in repairs if isinstance(repairs, list) else []:
                trouble.append((graph, str(row["id"]), str(repair).split(":", 1)[0], "row"))
            count += 1
            if len(rows) >= 20000:
                self._db.executemany("INSERT OR REPLACE INTO items VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
                rows.clear()
        self._db.executemany("INSERT OR REPLACE INTO items VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        self._db.executemany("INSERT OR IGNORE INTO trouble VALUES(?,?,?,?)", trouble)
        return end, count

    def _index_traces(self, graph: str, path: Path, start: int) -> tuple[int, int]:
        offsets: dict[str, array] = defaultdict(lambda: array("q"))
        trouble: set[tuple] = set()
        end, count = start, 0
        for off, line in _complete_lines(path, start):
            end = off + len(line)
            item_id = _quick_item_id(line)
            event = None
            if item_id is None or any(marker in line for marker in _TROUBLE_MARKERS):
                try:
                    event = orjson.loads(line)
                    item_id = event["item_id"]
                except (ValueError, KeyError, TypeError):
                    continue
            if item_id is None:
                continue
            item_id = str(item_id)
            offsets[item_id].append(off)
            stage = _trouble_stage(event) if event else None
            if stage:
                trouble.add((graph, item_id, stage, "trace"))
            count += 1
        self._db.executemany("INSERT INTO lines VALUES(?,?,?)",
                             ((graph, item_id, offs.tobytes()) for item_id, offs in offsets.items()))
        self._db.executemany("INSERT OR IGNORE INTO trouble VALUES(?,?,?,?)", trouble)
        return end, count

    # ---- reading -----------------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        """Per graph: items, ok, right, scored, calls, tokens, cost, latency, errors by cause; and the
        stages and causes the list can filter on."""
        with self._lock:
            per_graph = {g: {"items": 0, "ok": 0, "correct": 0, "scored": 0, "calls": 0, "tokens": 0,
                             "cost_usd": 0.0, "latency_s_sum": 0.0, "errors_by_cause": {}}
                         for g in self.folder.graphs}
            for g, items, ok, right, scored, calls, tokens, cost, latency in self._db.execute(
                    "SELECT graph, COUNT(*), SUM(status='ok'), SUM(correct=1), SUM(correct IS NOT NULL), SUM(calls),"
                    " SUM(tokens), SUM(cost), SUM(latency) FROM items GROUP BY graph"):
                if g in per_graph:
                    per_graph[g].update(items=items, ok=ok or 0, correct=right or 0, scored=scored or 0,
                                        calls=calls or 0, tokens=tokens or 0, cost_usd=cost or 0.0,
                                        latency_s_sum=latency or 0.0)
            for g, cause, n in self._db.execute(
                    "SELECT graph, COALESCE(cause, 'unknown'), COUNT(*) FROM items WHERE status != 'ok' "
                    "GROUP BY graph, cause ORDER BY COUNT(*) DESC, cause"):
                if g in per_graph:
                    per_graph[g]["errors_by_cause"][cause] = n
            stages = [r[0] for r in self._db.execute("SELECT DISTINCT stage FROM trouble ORDER BY stage")]
            causes = [r[0] for r in self._db.execute(
                "SELECT DISTINCT cause FROM items WHERE cause IS NOT NULL ORDER BY cause")]
        return {"graphs": per_graph, "stages": stages, "causes": causes}

    def list_items(self, params: dict[str, str]) -> dict[str, Any]:
        """One page of items matching the filters in `params` (see docs in server.py's /api/items)."""
        where, args = [], []
        graphs = list(self.folder.graphs)
        if params.get("graph"):
            where.append("graph = ?")
            args.append(params["graph"])
        if params.get("status") in ("ok", "error"):
            where.append("status = 'ok'" if params["status"] == "ok" else "status != 'ok'")
        correct = params.get("correct")
        if correct in ("1", "0"):
            where.append("correct = ?")
            args.append(int(correct))
        elif correct == "none":
            where.append("correct IS NULL")
        if params.get("cause"):
            where.append("cause = ?")
            args.append(params["cause"])
        if params.get("stage"):
            where.append("EXISTS (SELECT 1 FROM trouble t WHERE t.graph = items.graph AND t.item_id = items.id"
                         " AND t.stage = ?)")
            args.append(params["stage"])
        if params.get("q"):
            text = params["q"].lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("search LIKE ? ESCAPE '\\'")
            args.append(f"%{text}%")
        for key, value in (("right", 1), ("wrong", 0)):  # compare: items this graph got right / wrong
            if params.get(key):
                where.append("EXISTS (SELECT 1 FROM items o WHERE o.graph = ? AND o.id = items.id AND o.correct = ?)")
                args += [params[key], value]
        sort = SORTS.get(params.get("sort") or "id", "id")
        order = "ASC" if (params.get("order") or ("asc" if sort == "id" else "desc")) == "asc" else "DESC"
        try:
            page = max(1, int(params.get("page") or 1))
            per_page = min(MAX_PER_PAGE, max(1, int(params.get("per_page") or 50)))
        except ValueError:
            raise ValueError("page and per_page must be whole numbers") from None
        if (page - 1) * per_page >= 2 ** 63:  # SQLite's OFFSET; past the end, a smaller page is just empty
            raise ValueError(f"page must be at most {(2 ** 63 - 1) // per_page}")
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        by_graph = "CASE graph " + " ".join("WHEN ? THEN %d" % i for i in range(len(graphs))) + " END"
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM items{clause}", args).fetchone()[0]
            rows = self._db.execute(
                f"SELECT graph, id, status, correct, cause, cost, latency, calls, tokens, question, answer, reference"
                f" FROM items{clause} ORDER BY {sort} {order}, id ASC, {by_graph} LIMIT ? OFFSET ?",
                [*args, *graphs, per_page, (page - 1) * per_page]).fetchall()
            across: dict[str, dict[str, Any]] = defaultdict(dict)
            ids = sorted({r[1] for r in rows})
            if self.folder.compare and ids:
                marks = ",".join("?" * len(ids))
                for g, item_id, status, right in self._db.execute(
                        f"SELECT graph, id, status, correct FROM items WHERE id IN ({marks})", ids):
                    across[item_id][g] = {"status": status, "correct": None if right is None else bool(right)}
        keys = ("graph", "id", "status", "correct", "error_cause", "cost_usd", "latency_s", "calls", "tokens",
                "question", "answer", "reference")
        items = []
        for r in rows:
            item = dict(zip(keys, r))
            item["correct"] = None if item["correct"] is None else bool(item["correct"])
            if self.folder.compare:
                item["across"] = {g: across[item["id"]].get(g) for g in graphs}
            items.append(item)
        return {"total": total, "page": page, "per_page": per_page, "items": items}

    def graphs_of(self, item_id: str) -> list[str]:
        with self._lock:
            have = {r[0] for r in self._db.execute("SELECT graph FROM items WHERE id=?", (item_id,))}
            have |= {r[0] for r in self._db.execute("SELECT DISTINCT graph FROM lines WHERE item_id=?", (item_id,))}
        return [g for g in self.folder.graphs if g in have]

    def row(self, graph: str, item_id: str) -> dict[str, Any] | None:
        """The item's results.jsonl row, read at its offset."""
        with self._lock:
            found = self._db.execute("SELECT off, len FROM items WHERE graph=? AND id=?", (graph, item_id)).fetchone()
        if not found:
            return None
        with open(self.folder.graphs[graph] / RESULTS, "rb") as f:
            f.seek(found[0])
            return orjson.loads(f.read(found[1]))

    def events(self, graph: str, item_id: str) -> list[dict[str, Any]]:
        """The item's trace events, in file order, read at their offsets."""
        with self._lock:
            blobs = [r[0] for r in self._db.execute(
                "SELECT offsets FROM lines WHERE graph=? AND item_id=? ORDER BY rowid", (graph, item_id))]
        offsets = array("q")
        for blob in blobs:
            offsets.frombytes(blob)
        events = []
        if not offsets:  # no traces.jsonl, or no line of this item's: the page shows the row alone
            return events
        with open(self.folder.graphs[graph] / TRACES, "rb") as f:
            for off in offsets:
                f.seek(off)
                try:
                    events.append(orjson.loads(f.readline()))
                except ValueError:
                    continue
        return events


def open_index(folder: RunFolder) -> Index:
    """The folder's index, brought up to date; an index file that cannot be read is rebuilt."""
    try:
        index = Index(folder)
    except sqlite3.DatabaseError:
        os.unlink(folder.root / INDEX_NAME)
        index = Index(folder)
    index.refresh()
    return index
