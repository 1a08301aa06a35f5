"""Items/s on a Ray cluster with 1, 2 and 4 engine actors, and the Ray path against the local path.

    python bench/scale.py [--latency-ms 500] [--per-actor 4] [--seconds 20]

A scripted server answers every call after --latency-ms; each actor may have --per-actor items (and
calls) in flight, so one actor does at most per_actor / (4 calls × latency) items a second (chain,
staged: 4 calls an item) and adding actors is what adds throughput, even on 2 cores. The local path
then runs the same items at the same total concurrency (4 actors' worth). Items per configuration
are sized to about --seconds of work, so the Ray pipeline's start-up (actors importing the engine)
is counted but does not dominate. Items/s (wall) = items / the job's wall time (summary.json `wall_s`: from
the driver's start to its last row, on a cluster already running, as `--ray auto` joins one), so it
counts Ray Data's start-up (the pipeline, the actors' processes); items/s (working) = items / the time
from the first item's start to the last item's end (traces.jsonl), the rate once the actors run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_server.py"), "--port", "0",
                             "--latency-ms", str(latency_ms)], stdout=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{proc.stdout.readline().split()[1]}/v1"


def run_job(tmp: Path, name: str, items: int, api_base: str, per_item_concurrency: int, ray: list[str]) -> dict:
    path = tmp / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"id": f"{name}-{i}", "question": f"Which bar is tallest? ({name} {i})"})
                            + "\n" for i in range(items)))
    out = tmp / name
    proc = subprocess.run([sys.executable, "-m", "stagewise", "generate", str(path), "--out", str(out),
                           "--model", "hosted_vllm/fake", "--api-base", api_base, "--no-progress", "--no-cache",
                           "--concurrency", str(per_item_concurrency), *ray],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    events = [json.loads(line) for line in (out / "traces.jsonl").read_text().split("\n") if line]
    busy = (max(e["ts"] for e in events if e["event"] == "item.end")
            - min(e["ts"] for e in events if e["event"] == "item.start"))
    return {"items": summary["items"], "wall_s": summary["wall_s"], "items_s": summary["items"] / summary["wall_s"],
            "busy_s": busy, "busy_items_s": summary["items"] / busy}


def limiter_bookings(ray, n: int = 2000) -> tuple[float, float]:
    """(ms per booking one at a time, bookings/s with all in flight): what --rpm/--tpm on a cluster
    cost per request, and the most capped requests a second one limiter actor can book."""
    sys.path.insert(0, str(ROOT))
    from stagewise.cluster.limiter import AccountLimiter

    limiter = ray.remote(num_cpus=0)(AccountLimiter).remote(10**9, 10**12)
    account = ("hosted_vllm", "http://127.0.0.1:8000/v1")
    ray.get(limiter.reserve.remote(account, 100.0))
    t = time.perf_counter()
    for _ in range(n):
        ray.get(limiter.reserve.remote(account, 100.0))
    one = (time.perf_counter() - t) / n * 1000
    t = time.perf_counter()
    ray.get([limiter.reserve.remote(account, 100.0) for _ in range(n)])
    return one, n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency-ms", type=float, default=500)
    ap.add_argument("--per-actor", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--limiter-only", action="store_true", help="only time bookings at the limiter actor")
    a = ap.parse_args()
    import ray

    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    one, many = limiter_bookings(ray)
    print(f"limiter actor (--rpm/--tpm on a cluster): {one:.2f} ms per booking one at a time, "
          f"{many:,.0f} bookings/s in flight together\n")
    if a.limiter_only:
        ray.shutdown()
        return
    address = ray.get_runtime_context().gcs_address
    server, api_base = start_server(a.latency_ms)
    per_actor_items_s = a.per_actor / (4 * a.latency_ms / 1000)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for actors in (1, 2, 4):
                n = int(per_actor_items_s * actors * a.seconds)
                r = run_job(Path(tmp), f"ray{actors}", n, api_base, a.per_actor,
                            ["--ray", address, "--ray-actors", str(actors), "--ray-batch-size", "2"])
                rows.append((f"Ray, {actors} actor{'s' * (actors > 1)} × {a.per_actor}", actors * a.per_actor, r))
            local = run_job(Path(tmp), "local", rows[-1][2]["items"], api_base, 4 * a.per_actor, [])
            rows.append((f"local path, one process × {4 * a.per_actor}", 4 * a.per_actor, local))
    finally:
        server.terminate()
        ray.shutdown()
    print(f"latency {a.latency_ms:g} ms, chain (4 calls an item), {a.per_actor} items in flight per actor\n")
    print("| run | items in flight | items | wall s | items/s (wall) | start-up s | items/s (working) | ideal |")
    print("|---|---|---|---|---|---|---|---|")
    for name, c, r in rows:
        ideal = c / (4 * a.latency_ms / 1000)
        print(f"| {name} | {c} | {r['items']} | {r['wall_s']:.1f} | {r['items_s']:.2f} | "
              f"{r['wall_s'] - r['busy_s']:.1f} | {r['busy_items_s']:.2f} | {ideal:.2f} |")
    ray4 = rows[2][2]
    print(f"\nRay (4 actors) / local at the same concurrency: {ray4['busy_items_s'] / local['busy_items_s']:.2f} "
          f"working, {ray4['items_s'] / local['items_s']:.2f} with start-up")


if __name__ == "__main__":
    main()
