"""Latency of one stage_beam item against a fixed-latency server, vs its critical path.

    python bench/latency.py --n 4 --latency-ms 100

Critical path = the calls that must follow one another: per stage one generate round (n samples in
one request), then the selection's rounds; a reasoning comparison is check → check → judge (the
reference's order), so it counts 3. Bracket: ceil(log2 N) rounds; knockout: N-1.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throughput import start_server  # noqa: E402
from engine.backends import make_backend  # noqa: E402
from engine.client import Client  # noqa: E402
from engine.loop import run  # noqa: E402
from engine.runner import run_items  # noqa: E402
from engine.trace import Tracer  # noqa: E402
from search import Roles, Settings, build_graph  # noqa: E402


def critical_path(n: int, selection: str) -> int:
    rounds = math.ceil(math.log2(n)) if selection == "bracket" else n - 1
    return 4 + rounds * (1 + 1 + 1 + 3)  # summary, caption, conclusion: 1 per round; reasoning: 3


async def one_item(url: str, n: int, selection: str, tmp: Path) -> float:
    items = tmp / "items.jsonl"
    items.write_text(json.dumps({"id": "q", "question": "Which bar is the tallest?"}) + "\n")
    tracer = Tracer(tmp / "traces.jsonl")
    client = Client(make_backend("hosted_vllm/fake", url), tracer=tracer)
    solve = build_graph("stage_beam", Settings(mode="full", n=n, selection=selection), Roles(client, client))
    t0 = time.perf_counter()
    await run_items(items, tmp, solve, tracer=tracer, meta={"graph": "stage_beam"}, show_progress=False)
    wall = time.perf_counter() - t0
    await client.aclose()
    tracer.close()
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--latency-ms", type=float, default=100.0)
    a = ap.parse_args()
    proc, url = start_server(a.latency_ms)
    try:
        for selection in ("bracket", "knockout"):
            with tempfile.TemporaryDirectory() as tmp:
                wall = run(one_item(url, a.n, selection, Path(tmp)))
            path = critical_path(a.n, selection) * a.latency_ms / 1000
            print(f"stage_beam N={a.n} {selection:<8}: {wall:6.2f} s   critical path "
                  f"{critical_path(a.n, selection)} x {a.latency_ms:g} ms = {path:5.2f} s   ratio {wall / path:.2f}")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
