"""Cost of one cache lookup on the event loop's thread, in microseconds, while the writer thread commits.

    python bench/cache.py --rows 100000 --lookups 20000

Why it matters: `Cache.get` runs on the event loop, so a slow lookup would stall every call in
flight. Cases: a hit still in memory (put this run), a hit on disk, a miss on a non-empty file, and
disk hits while another thread keeps committing batches (WAL: readers do not wait for the writer).
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.cache import Cache  # noqa: E402
from engine.types import Completion  # noqa: E402


def _per_lookup_us(cache: Cache, keys: list[str], n: int) -> float:
    started = time.perf_counter()
    for key in keys:
        cache.get(key, n)
    return (time.perf_counter() - started) / len(keys) * 1e6


def _wait_written(cache: Cache) -> None:
    while cache.unwritten:
        time.sleep(0.01)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000, help="requests already in the file")
    ap.add_argument("--lookups", type=int, default=20_000)
    ap.add_argument("--n", type=int, default=4, help="samples per request looked up at once")
    a = ap.parse_args()
    reply = Completion(text="<SUMMARY>" + "x" * 400 + "</SUMMARY>", finish_reason="stop",
                       prompt_tokens=900, completion_tokens=120)
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.sqlite"
        cache = Cache(path)
        for i in range(a.rows):
            cache.put(f"old{i}", {s: reply for s in range(a.n)})
        _wait_written(cache)
        cache.close()

        cache = Cache(path)  # a file with rows from earlier runs
        disk = [f"old{rng.randrange(a.rows)}" for _ in range(a.lookups)]
        missing = [f"new{i}" for i in range(a.lookups)]
        results = {"hit on disk": _per_lookup_us(cache, disk, a.n),
                   "miss": _per_lookup_us(cache, missing, a.n)}
        for key in missing[:2000]:
            cache.put(key, {s: reply for s in range(a.n)})
        results["hit in memory (not yet written)"] = _per_lookup_us(cache, missing[:2000], a.n)
        _wait_written(cache)
        for i in range(50_000):  # keep the writer thread committing while we read
            cache.put(f"busy{i}", {0: reply})
        results["hit on disk, writer busy"] = _per_lookup_us(cache, disk, a.n)
        cache.close()
    print(f"{a.rows} requests x {a.n} samples in the file, {a.lookups} lookups of {a.n} samples each")
    for case, us in results.items():
        print(f"  {case:34s} {us:8.1f} µs per lookup")


if __name__ == "__main__":
    main()
