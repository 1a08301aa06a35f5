"""The response cache under a shared, locked file: writes wait and retry, none is lost, none is kept
in memory once it is on disk."""
from __future__ import annotations

import sqlite3
import threading
import time
import warnings

from engine.cache import Cache
from engine.types import Completion


def _rows_on_disk(path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM completions").fetchone()[0]


def test_a_locked_cache_file_delays_writes_but_loses_none(tmp_path):
    path = tmp_path / "shared.sqlite"
    cache = Cache(path)
    other = sqlite3.connect(path, isolation_level=None)  # another run sharing --cache
    other.execute("BEGIN EXCLUSIVE")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(40):
            cache.put(f"k{i}", {0: Completion(text=f"reply {i}"), 1: Completion(text=f"other {i}")})
        time.sleep(6)  # hold the lock longer than sqlite's own 5 s busy wait
        assert _rows_on_disk(path) == 0
        other.execute("COMMIT")  # the other run lets go
        deadline = time.monotonic() + 10
        while _rows_on_disk(path) < 80 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert _rows_on_disk(path) == 80 and cache._writer.is_alive()
    assert cache.unwritten == 0  # written, so no longer held in memory
    assert len([w for w in caught if "cannot write" in str(w.message)]) == 1  # warned, once
    assert [c.text for c in cache.get("k7", 2)] == ["reply 7", "other 7"]  # served from disk now
    cache.put("late", {0: Completion(text="after the lock")})
    cache.close()
    assert _rows_on_disk(path) == 81
    other.close()


def test_lookups_are_served_from_disk_after_the_pending_rows_are_pruned(tmp_path):
    cache = Cache(tmp_path / "c.sqlite")  # empty at start: lookups may skip the disk only until a write lands
    cache.put("k", {0: Completion(text="a")})
    deadline = time.monotonic() + 10
    while cache.unwritten and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.unwritten == 0
    assert cache.get("k", 1)[0].text == "a"
    cache.close()


def test_close_waits_for_a_lock_released_while_closing(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = Cache(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    cache.put("k", {0: Completion(text="a")})
    releaser = threading.Timer(1.0, lambda: other.execute("COMMIT"))
    releaser.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache.close()
    releaser.join()
    other.close()
    assert _rows_on_disk(path) == 1
