"""How quick `stagewise view` is on a big run: a synthetic stage_beam run of 100k items (rows and full
traces in the documented format: every span, candidate text, verdict with its reason and outputs,
pre-check), then the index build, a reopen, and requests over real HTTP.

    python bench/view.py --items 100000 --n 4           # writes ~GBs under a temporary folder
    python bench/view.py --dir runs/big --keep          # keep the run to try `stagewise view runs/big`

Why it matters: the viewer must open a run of any size and answer a list page or one item in about the
time a person waits for a click, never reading the whole run per request.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stagewise.view.folder import open_folder  # noqa: E402
from stagewise.view.index import INDEX_NAME, open_index  # noqa: E402

STAGES = ("summary", "caption", "reasoning", "conclusion")
WORDS = ("the", "bar", "line", "point", "value", "highest", "lower", "chart", "blue", "red", "is", "at", "than",
         "so", "answer", "option", "second", "third", "compare", "read")


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4):0{digits}x}"


def item_events(rng: random.Random, item_id: str, n: int, t: float) -> list[dict]:
    """One stage_beam item's events as a run writes them: spans close after their children."""
    trace = _hex(rng, 32)
    base = {"item_id": item_id, "trace_id": trace, "graph": "stage_beam"}
    root = _hex(rng, 16)
    events = [{"ts": t, **base, "span_id": root, "parent_id": None, "event": "item.start", "attempt": 1}]
    prefix = 0
    for stage in STAGES:
        stage_span = _hex(rng, 16)
        lab = {**base, "stage": stage}
        texts = [_text(rng, 8 if stage == "conclusion" else 24) for _ in range(n)]
        for i, text in enumerate(texts):
            events.append({"ts": t, **lab, "span_id": _hex(rng, 16), "parent_id": stage_span, "event": "llm.call",
                           "role": "generate", "candidate": i, "model": "openai/gpt-4o-mini", "n": n, "sample": i,
                           "prompt_tokens": 900 if i == 0 else 0, "completion_tokens": 40, "cost_usd": 0.00004,
                           "latency_s": 1.2, "cache": "miss", "attempt": 1, "status": "ok", "error": None,
                           "finish_reason": "stop", "text": text})
            events.append({"ts": t, **lab, "span_id": stage_span, "parent_id": root, "event": "candidate",
                           "index": i, "text": text, "prefix_len": prefix, "repairs": []})
        events.append({"ts": t, **lab, "span_id": stage_span, "parent_id": root, "event": "span.end", "kind": "stage",
                       "name": stage, "start_ts": t, "end_ts": t + 1.2, "status": "ok", "error": None, "n": n,
                       "prefix_len": prefix})
        select = _hex(rng, 16)
        alive, round_no, verdicts = list(range(n)), 1, []
        while len(alive) > 1:
            nxt = []
            for a, b in zip(alive[::2], alive[1::2]):
                vspan, winner = _hex(rng, 16), rng.choice((a, b))
                vlab = {**lab, "selection": "bracket", "pair": [a, b]}
                output = f"Response {1 if winner == a else 2} is better: {_text(rng, 12)}"
                if stage == "reasoning":
                    for pos, cand in enumerate((a, b)):
                        cspan = _hex(rng, 16)
                        events.append({"ts": t, **vlab, "span_id": _hex(rng, 16), "parent_id": cspan, "event": "llm.call",
                                       "role": "check", "candidate": 0, "model": "openai/gpt-4o-mini", "n": 1,
                                       "sample": 0, "prompt_tokens": 300, "completion_tokens": 2, "cost_usd": 0.00001,
                                       "latency_s": 0.3, "cache": "miss", "attempt": 1, "status": "ok", "error": None,
                                       "finish_reason": "stop", "text": "yes", "checked": pos})
                        events.append({"ts": t, **vlab, "span_id": cspan, "parent_id": vspan, "event": "judge.check",
                                       "candidate": cand, "position": pos, "passed": True, "output": "yes",
                                       "rule": "robust"})
                        events.append({"ts": t, **vlab, "span_id": cspan, "parent_id": vspan, "event": "span.end",
                                       "kind": "check", "name": stage, "start_ts": t, "end_ts": t + 0.3, "status": "ok",
                                       "error": None, "candidate": cand})
                events.append({"ts": t, **vlab, "span_id": _hex(rng, 16), "parent_id": vspan, "event": "llm.call",
                               "role": "judge", "candidate": 0, "model": "openai/gpt-4o-mini", "n": 1, "sample": 0,
                               "prompt_tokens": 700, "completion_tokens": 30, "cost_usd": 0.00003, "latency_s": 0.8,
                               "cache": "miss", "attempt": 1, "status": "ok", "error": None, "finish_reason": "stop",
                               "text": output, "judge_attempt": 1})
                events.append({"ts": t, **vlab, "span_id": vspan, "parent_id": select, "event": "span.end",
                               "kind": "verdict", "name": stage, "start_ts": t, "end_ts": t + 0.8, "status": "ok",
                               "error": None, "winner": winner, "parse": "ok"})
                verdicts.append({"ts": t, **vlab, "span_id": vspan, "parent_id": select, "event": "judge.verdict",
                                 "round": round_no, "winner": winner, "parse": "ok", "reason": _text(rng, 10),
                                 "outputs": [output]})
                nxt.append(winner)
            alive, round_no = nxt + alive[len(alive) // 2 * 2:], round_no + 1
        events.extend(verdicts)
        events.append({"ts": t, **lab, "selection": "bracket", "span_id": select, "parent_id": stage_span,
                       "event": "span.end", "kind": "select", "name": stage, "start_ts": t, "end_ts": t + 1.6,
                       "status": "ok", "error": None, "n": n, "winner": alive[0], "rounds": round_no - 1,
                       "mode": "bracket"})
        prefix += len(texts[alive[0]])
    events.append({"ts": t, **base, "span_id": root, "parent_id": None, "event": "item.end", "status": "ok",
                   "error": None, "error_cause": None, "latency_s": 9.5, "start_ts": t - 9.5, "usage_calls": 40,
                   "usage_cache_hits": 0, "usage_prompt_tokens": 9000, "usage_completion_tokens": 900,
                   "usage_cost_usd": 0.0009, "usage_cost_uncached_usd": 0.0009, "usage_attempts": 20,
                   "usage_failed_attempts": 0})
    return events


def item_row(rng: random.Random, item_id: str) -> dict:
    stages = {s: _text(rng, 8 if s == "conclusion" else 24) for s in STAGES}
    ok = rng.random() > 0.02
    usage = {"calls": 40, "cache_hits": 0, "prompt_tokens": rng.randint(6000, 12000),
             "completion_tokens": rng.randint(600, 1200), "cost_usd": round(rng.uniform(0.0005, 0.002), 6),
             "cost_uncached_usd": 0.0, "attempts": 20, "failed_attempts": 0}
    row = {"id": item_id, "status": "ok" if ok else "error", "error": None if ok else f"item {item_id}: rate limited",
           "error_cause": None if ok else "rate_limit", "graph": "stage_beam", "model": "openai/gpt-4o-mini",
           "judge_model": "openai/gpt-4o-mini", "question": f"Which bar is the highest? ({item_id})",
           "image": f"/data/charts/{item_id}.png", "reference": "B", "usage": usage,
           "latency_s": round(rng.uniform(3, 30), 3)}
    if ok:
        row.update(stages=stages, response="".join(f"<{s.upper()}>{t}</{s.upper()}>" for s, t in stages.items()),
                   answer=rng.choice("ABCD"), repairs=[])
        row["correct"] = row["answer"] == "B"
    return row


def synthesize(out: Path, items: int, n: int, seed: int = 0) -> tuple[int, int]:
    """Write out/results.jsonl and out/traces.jsonl; items finish interleaved, as concurrent ones do."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.jsonl", "wb") as results, open(out / "traces.jsonl", "wb") as traces:
        for block in range(0, items, 64):  # 64 items in flight: their events interleave
            ids = [f"item-{i:07d}" for i in range(block, min(items, block + 64))]
            streams = [item_events(rng, i, n, 1.8e9 + block) for i in ids]
            while any(streams):
                for s in streams:
                    for _ in range(min(3, len(s))):
                        traces.write(orjson.dumps(s.pop(0)) + b"\n")
            for i in ids:
                results.write(orjson.dumps(item_row(rng, i)) + b"\n")
    return (out / "results.jsonl").stat().st_size, (out / "traces.jsonl").stat().st_size


async def _requests(index, items: int, repeats: int) -> dict[str, float]:
    """Median ms of each request over real HTTP (the server in this process, as `stagewise view` runs it)."""
    import aiohttp
    from aiohttp import web

    from stagewise.view.server import make_app

    sock = socket.create_server(("127.0.0.1", 0))
    runner = web.AppRunner(make_app(index), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    middle = f"item-{items // 2:07d}"
    paths = {"run figures (/api/run)": "/api/run",
             "list page 1 (by id)": "/api/items?per_page=50",
             "list page 1000, sorted by cost": "/api/items?per_page=50&sort=cost&page=1000",
             "list, status=error, sorted by latency": "/api/items?status=error&sort=latency",
             "list, text search": f"/api/items?q={middle}",
             "one item (row + tree)": f"/api/item?id={middle}"}
    figures = {}
    async with aiohttp.ClientSession() as session:
        for label, path in paths.items():
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                async with session.get(base + path) as r:
                    assert r.status == 200, (path, r.status, await r.text())
                    await r.read()
                times.append((time.perf_counter() - t0) * 1000)
            figures[label] = statistics.median(times)
    await runner.cleanup()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--n", type=int, default=4, help="candidates per stage")
    ap.add_argument("--dir", type=Path, default=None, help="where to write the run (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the run folder")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    out = args.dir or Path(tempfile.mkdtemp(prefix="view-bench-"))
    try:
        t0 = time.perf_counter()
        rows_b, traces_b = synthesize(out, args.items, args.n)
        lines = sum(1 for _ in open(out / "traces.jsonl", "rb"))
        print(f"synthetic stage_beam run, N={args.n}: {args.items:,} items, results.jsonl {rows_b / 1e6:.0f} MB, "
              f"traces.jsonl {traces_b / 1e6:.0f} MB ({lines:,} events), written in {time.perf_counter() - t0:.0f} s")
        (out / INDEX_NAME).unlink(missing_ok=True)
        folder = open_folder(out)
        t0 = time.perf_counter()
        index = open_index(folder)
        build = time.perf_counter() - t0
        index.close()
        t0 = time.perf_counter()
        index = open_index(folder)
        reopen = time.perf_counter() - t0
        print(f"| step | time |\n|---|---|\n| build the index (first open) | {build:.1f} s |\n"
              f"| open again (index reused) | {reopen * 1000:.0f} ms |")
        for label, ms in asyncio.run(_requests(index, args.items, args.repeats)).items():
            print(f"| {label} | {ms:.0f} ms |")
        print(f"index file: {(out / INDEX_NAME).stat().st_size / 1e6:.0f} MB; machine: {os.cpu_count()} CPU(s)")
        index.close()
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
