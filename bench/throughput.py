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
import statistics
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


def measure(coro_factory, n: int) -> tuple[float, float]:
    """(calls/s, client CPU ms per call) of one run; CPU is this process only: the server has its own."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    run(coro_factory())
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return n / wall, 1000 * cpu / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--litellm", action="store_true", help="also time a naive litellm.acompletion loop")
    a = ap.parse_args()
    proc, url = start_server(a.latency_ms)
    ideal = a.concurrency / (a.latency_ms / 1000)
    print(f"fixed-latency server {a.latency_ms:g} ms, C={a.concurrency}, N={a.n}, {a.rounds} interleaved "
          f"rounds: ideal C/latency = {ideal:.0f} calls/s")
    paths = {
        "bare aiohttp client": lambda t: bare(url, a.n, a.concurrency),
        "engine Client (trace+cache+limits)": lambda t: engine_client(url, a.n, a.concurrency, t),
        "generate, chain --mode full": lambda t: engine_runner(url, a.n, a.concurrency, t, "full"),
        "generate, chain (default, staged)": lambda t: engine_runner(url, a.n, a.concurrency, t, "staged"),
    }
    if a.litellm:
        paths["naive litellm.acompletion"] = lambda t: litellm_loop(url, a.n, a.concurrency)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    try:
        run(bare(url, 500, a.concurrency))  # warm-up
        for _ in range(a.rounds):
            for name, factory in paths.items():
                with tempfile.TemporaryDirectory() as tmp:
                    runs[name].append(measure(lambda: factory(Path(tmp)), a.n))
    finally:
        proc.terminate()
        proc.wait()
    medians = {name: (statistics.median(r for r, _ in rs), statistics.median(c for _, c in rs))
               for name, rs in runs.items()}
    bare_rate = medians["bare aiohttp client"][0]
    for name, (rate, cpu) in medians.items():
        print(f"{name:<36} {rate:7.0f} calls/s  efficiency {rate / ideal:6.1%}  client CPU {cpu:6.3f} ms/call"
              f"  ratio to bare {rate / bare_rate:5.2f}")


if __name__ == "__main__":
    main()
