"""Throughput of the engine against a fixed-latency OpenAI-compatible server, vs a bare aiohttp client.

    python bench/throughput.py --n 5000 --concurrency 256 --latency-ms 50 [--litellm]

The server runs in its own process on this machine, so server and client share the CPU: the bare
aiohttp client measured in the same run is the ceiling. Prints calls/s, the ideal C/latency,
efficiency, CPU ms per call (client process), and the engine/bare ratio.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from engine.backends import make_backend  # noqa: E402
from engine.loop import run  # noqa: E402  (uvloop when installed, as `stagewise` itself runs)
from engine.cache import Cache  # noqa: E402
from engine.client import Client  # noqa: E402
from engine.limits import Limits  # noqa: E402
from engine.runner import run_items  # noqa: E402
from engine.trace import Tracer  # noqa: E402
from engine.types import Request  # noqa: E402
from search import build_graph  # noqa: E402
from search.base import Roles, Settings  # noqa: E402


def start_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_server.py"), "--port", "0",
                             "--latency-ms", str(latency_ms)], stdout=subprocess.PIPE, text=True)
    port = proc.stdout.readline().split()[1]
    return proc, f"http://127.0.0.1:{port}/v1"


def messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Question {i}: which bar is the tallest?"}]


async def pool(n: int, concurrency: int, call) -> None:
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await call(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def bare(url: str, n: int, c: int) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def call(i: int) -> None:
            body = {"model": "fake", "messages": messages(i), "max_tokens": 64}
            async with session.post(url + "/chat/completions", json=body) as r:
                data = await r.json()
                assert data["choices"]

        await pool(n, c, call)


async def engine_client(url: str, n: int, c: int, tmp: Path) -> None:
    tracer = Tracer(tmp / "traces.jsonl")
    cache = Cache(tmp / "cache.sqlite")
    client = Client(make_backend("hosted_vllm/fake", url), tracer=tracer, cache=cache, limits=Limits(c))

    async def call(i: int) -> None:
        [out] = await client.complete(Request(messages=messages(i), max_tokens=64, tags={"role": "bench"}))
        assert out.text

    await pool(n, c, call)
    await client.aclose()
    cache.close()
    tracer.close()


async def engine_runner(url: str, n: int, c: int, tmp: Path, mode: str) -> None:
    """The `stagewise generate --graph chain` path, rows written: --mode full makes one call per
    item, --mode staged (the default) four."""
    items = tmp / "items.jsonl"
    per_item = 1 if mode == "full" else 4
    items.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Question {i}?"}) + "\n"
                             for i in range(n // per_item)))
    tracer = Tracer(tmp / "run" / "traces.jsonl") if (tmp / "run").mkdir() is None else None
    cache = Cache(tmp / "run" / "cache.sqlite")
    client = Client(make_backend("hosted_vllm/fake", url), tracer=tracer, cache=cache, limits=Limits(c))
    graph = build_graph("chain", Settings(mode=mode), Roles(client, client))
    await run_items(items, tmp / "run", graph, tracer=tracer, meta={"graph": "chain"}, concurrency=c,
                    show_progress=False)
    await client.aclose()
    cache.close()
    tracer.close()


async def litellm_loop(url: str, n: int, c: int) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    async def call(i: int) -> None:
        r = await litellm.acompletion(model="hosted_vllm/fake", api_base=url, api_key="sk-none",
                                      messages=messages(i), max_tokens=64)
        assert r.choices

    await pool(n, c, call)


def measure(name: str, coro_factory, n: int, ideal: float) -> float:
    """Calls/s of one run; CPU is this (client) process only: the server has its own."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    run(coro_factory())
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rate = n / wall
    print(f"{name:<36} {rate:9.0f} calls/s   efficiency {rate / ideal:6.1%}   "
          f"client CPU {1000 * cpu / n:6.3f} ms/call   ({n} calls in {wall:.2f} s)")
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--litellm", action="store_true", help="also time a naive litellm.acompletion loop")
    a = ap.parse_args()
    proc, url = start_server(a.latency_ms)
    ideal = a.concurrency / (a.latency_ms / 1000)
    print(f"fixed-latency server {a.latency_ms:g} ms, C={a.concurrency}, N={a.n}: "
          f"ideal C/latency = {ideal:.0f} calls/s")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            measure("warm-up (bare aiohttp)", lambda: bare(url, min(a.n, 500), a.concurrency), min(a.n, 500), ideal)
            b = measure("bare aiohttp client", lambda: bare(url, a.n, a.concurrency), a.n, ideal)
            (t / "c").mkdir()
            e = measure("engine Client (trace+cache+limits)", lambda: engine_client(url, a.n, a.concurrency, t / "c"), a.n, ideal)
            (t / "r").mkdir()
            r = measure("generate, chain --mode full", lambda: engine_runner(url, a.n, a.concurrency, t / "r", "full"), a.n, ideal)
            (t / "s").mkdir()
            s = measure("generate, chain (default)", lambda: engine_runner(url, a.n, a.concurrency, t / "s", "staged"), a.n, ideal)
            if a.litellm:
                measure("naive litellm.acompletion", lambda: litellm_loop(url, a.n, a.concurrency), a.n, ideal)
        print(f"ratio engine Client / bare aiohttp: {e / b:.2f}")
        print(f"ratio generate --mode full / bare aiohttp: {r / b:.2f}")
        print(f"ratio generate default (staged) / bare aiohttp: {s / b:.2f}")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
