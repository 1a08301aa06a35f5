"""`--ray`: the same job on a Ray cluster, with the local path's contract (docs/scale-out.md).

One local cluster for the module (`ray.init(num_cpus=4)`: logical CPUs, so Ray Data's read task and
3 actors fit on 2 cores); the CLI joins it by address, as `stagewise generate --ray auto` joins a
cluster `ray start` runs. Faults are real: actor processes killed with SIGKILL (as the OOM killer or
vLLM's `os._exit` on a dead engine end them), the driver killed with kill -9.
"""
from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import sqlite3
from collections import Counter

import pytest

from conftest import ROOT, read_jsonl, rows_in, stagewise, start_stagewise, wait_for, write_items

if os.environ.get("CI"):  # CI installs the ray extra: a missing Ray fails there instead of skipping
    import ray
else:
    ray = pytest.importorskip("ray")
import psutil  # noqa: E402  (with the train extra, as CI installs it)

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def cluster() -> str:
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)  # ours, whatever else runs
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _items(tmp_path, count: int, extra: list[dict] | None = None):
    (tmp_path / "img").mkdir(exist_ok=True)
    (tmp_path / "img" / "dot.png").write_bytes(PNG)
    rows = [{"id": f"q{i}", "question": f"Which bar is tallest? (item {i})", "choices": ["A", "B"]}
            for i in range(count)]
    return write_items(tmp_path / "items.jsonl", rows + (extra or []))


def _comparable(row: dict) -> dict:
    """A row without what differs between two runs of the same job: timings, and which of its calls
    the shared cache answered (two identical requests in flight at once both miss) — but not how many."""
    if isinstance(row, dict):
        return {k: (v["calls"] if k == "usage" else _comparable(v)) for k, v in row.items()
                if "latency" not in k and not k.endswith("_s")}
    if isinstance(row, list):
        return [_comparable(v) for v in row]
    return row


def _actor_pids() -> list[int]:
    """Engine actors of this module's cluster: processes under this test process titled by Ray."""
    me = psutil.Process(os.getpid())
    return [p.pid for p in me.children(recursive=True)
            if "EngineActor" in " ".join(_cmdline(p))]


def _cmdline(p) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def test_every_graph_gives_the_local_rows(cluster, tmp_path, fake_server):
    """compare over every graph on 3 actors: the same rows as the local path for the same seed, the
    same exit status; an image named by a relative path is loaded on the driver's node."""
    items = _items(tmp_path, 5, [{"id": "pic", "question": "What is shown?", "image": "img/dot.png"},
                                 {"id": "nopic", "question": "And here?", "image": "img/missing.png"}])
    common = ["--model", "hosted_vllm/fake", "--api-base", fake_server.api_base, "--no-progress", "--n", "2",
              "--graphs", "chain,best_of_n,stage_beam,sentence_beam", "--max-sentences", "3"]
    on_ray = stagewise("compare", items, "--out", tmp_path / "ray", *common, "--ray", cluster,
                       "--ray-actors", "3", "--ray-batch-size", "2")
    local = stagewise("compare", items, "--out", tmp_path / "local", *common)
    assert on_ray.returncode == local.returncode == 3, on_ray.stderr  # the missing image: one input error
    for graph in ("chain", "best_of_n", "stage_beam", "sentence_beam"):
        r = {row["id"]: row for row in read_jsonl(tmp_path / "ray" / graph / "results.jsonl")}
        l = {row["id"]: row for row in read_jsonl(tmp_path / "local" / graph / "results.jsonl")}
        assert len(r) == len(read_jsonl(tmp_path / "ray" / graph / "results.jsonl")) == 7
        assert {k: _comparable(v) for k, v in r.items()} == {k: _comparable(v) for k, v in l.items()}, graph
        assert r["pic"]["status"] == "ok" and r["pic"]["image"] == str(tmp_path / "img" / "dot.png")
        assert r["nopic"]["error_cause"] == "input" and "nopic" in r["nopic"]["error"]
        ends = Counter(t["item_id"] for t in read_jsonl(tmp_path / "ray" / graph / "traces.jsonl")
                       if t["event"] == "item.end")
        assert ends == Counter({i: 1 for i in r}), graph
        s = json.loads((tmp_path / "ray" / graph / "summary.json").read_text())
        assert (s["items"], s["ok"], s["error"]) == (7, 6, 1)


def test_the_cluster_reads_items_as_the_local_runner_does(cluster, tmp_path, fake_server):
    """A byte-order mark, a U+2028 inside a question (valid JSON, a line break to str.splitlines), a line
    that is not UTF-8, a repeated id and an image URL nothing answers: the same rows as locally, each
    item run once."""
    items = tmp_path / "items.jsonl"
    items.write_bytes(b'\xef\xbb\xbf{"id": "a", "question": "Q1"}\n'
                      + '{"id": "b", "question": "one\u2028two"}\n'.encode()
                      + b'{"id": "c", "question": "caf\xe9"}\n{"id": "d", "question": "Q4"}\n'
                      + b'{"id": "a", "question": "again"}\n'
                      + b'{"id": "down", "question": "Q", "image": "http://127.0.0.1:9/chart.png"}\n')
    common = ["--model", "hosted_vllm/fake", "--api-base", fake_server.api_base, "--no-progress", "--graph", "chain"]
    on_ray = stagewise("generate", items, "--out", tmp_path / "ray", *common, "--ray", cluster, "--ray-actors", "1")
    local = stagewise("generate", items, "--out", tmp_path / "local", *common)
    assert on_ray.returncode == local.returncode == 3, on_ray.stderr  # the line that is not UTF-8
    r = {row["id"]: row for row in read_jsonl(tmp_path / "ray" / "results.jsonl")}
    l = {row["id"]: row for row in read_jsonl(tmp_path / "local" / "results.jsonl")}
    assert sorted(r) == ["a", "b", "d", "down", "line-3"] and r["a"]["question"] == "Q1"
    assert r["down"]["error_cause"] == "connection"  # the network's: a rerun retries it, on Ray too
    assert {k: _comparable(v) for k, v in r.items()} == {k: _comparable(v) for k, v in l.items()}
    ends = Counter(t["item_id"] for t in read_jsonl(tmp_path / "ray" / "traces.jsonl") if t["event"] == "item.end")
    assert ends == Counter({i: 1 for i in r})


def _cached_rows(out) -> int:
    """Rows on disk in the run's cache (each is one answered call: every request here asks one sample)."""
    if not (out / "cache.sqlite").exists():
        return -1
    with contextlib.closing(sqlite3.connect(out / "cache.sqlite", timeout=5)) as db:
        try:
            return db.execute("SELECT count(*) FROM completions").fetchone()[0]
        except sqlite3.OperationalError:  # the table is not created yet
            return -1


def _stuck_item_calls(out, item_id: str) -> dict[str, str]:
    calls = [t for t in read_jsonl(out / "traces.jsonl") if t["event"] == "llm.call" and t["item_id"] == item_id]
    return {t["stage"]: t["cache"] for t in calls[-4:]}


def test_actors_killed_mid_batch_rerun_it(cluster, tmp_path, fake_server_factory):
    """Every actor SIGKILLed while an item waits in its reasoning stage: Ray restarts them and reruns
    their batches; that item's finished calls come from the cache; every item ends once. An item the
    server always fails is an error row (exit 3), and the same command retries it (docs/runs.md)."""
    server = fake_server_factory(latency_ms=20)
    items = _items(tmp_path, 12, [{"id": "stuck", "question": "This one stalls [[slow:reasoning]]"},
                                  {"id": "broken", "question": "The server fails this one [[always500]]"}])
    out = tmp_path / "run"
    args = ["generate", items, "--out", out, "--model", "hosted_vllm/fake", "--api-base", server.api_base,
            "--no-progress", "--max-retries", "0", "--ray", cluster, "--ray-actors", "2", "--ray-batch-size", "2"]
    proc = start_stagewise(*args)
    wait_for(lambda: server.get("/stats").get("slow_waiting") == 1, "the stalled reasoning call", 120)
    # The cache writes in the background (milliseconds behind, docs/runs.md): kill once every answered
    # call is on disk, so the stalled item's finished stages are there to be replayed.
    wait_for(lambda: _cached_rows(out) == server.get("/stats").get("ok", 0), "the cache to catch up", 120)
    pids = _actor_pids()
    assert len(pids) == 2
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    server.get("/release")
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 3 and "1 server" in stderr, stderr
    ids = Counter({f"q{i}": 1 for i in range(12)} | {"stuck": 1, "broken": 1})
    rows = read_jsonl(out / "results.jsonl")
    assert Counter(r["id"] for r in rows) == ids
    assert [r["id"] for r in rows if r["status"] != "ok"] == ["broken"]
    assert _stuck_item_calls(out, "stuck") == {"summary": "hit", "caption": "hit", "reasoning": "miss",
                                               "conclusion": "miss"}
    ends = Counter(t["item_id"] for t in read_jsonl(out / "traces.jsonl") if t["event"] == "item.end")
    assert ends == ids
    assert not set(pids) & set(_actor_pids()), "the killed actors were replaced"

    again = stagewise(*args)  # the same command: the server error is retried, the rest is done
    assert again.returncode == 3
    assert Counter(r["id"] for r in read_jsonl(out / "results.jsonl")) == ids
    assert [r["id"] for r in read_jsonl(out / "retried.jsonl")] == ["broken"]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["retried"], summary["this_run"]["items"], summary["items"]) == (1, 1, 14)


def test_driver_killed_then_the_same_command_resumes(cluster, tmp_path, fake_server_factory):
    server = fake_server_factory(latency_ms=20)
    items = _items(tmp_path, 30, [{"id": "stuck", "question": "This one stalls [[slow:reasoning]]"}])
    out = tmp_path / "run"
    args = ["generate", items, "--out", out, "--model", "hosted_vllm/fake", "--api-base", server.api_base,
            "--no-progress", "--ray", cluster, "--ray-actors", "2", "--ray-batch-size", "2"]
    proc = start_stagewise(*args)
    results = out / "results.jsonl"
    wait_for(lambda: server.get("/stats").get("slow_waiting") == 1, "the stalled reasoning call", 120)
    wait_for(lambda: rows_in(results) >= 6, "6 rows", 120)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = read_jsonl(results)
    assert "stuck" not in {r["id"] for r in first} and len(first) < 31

    again = stagewise(*args)  # the same command
    assert again.returncode == 0, again.stderr
    final = read_jsonl(results)
    assert Counter(r["id"] for r in final) == Counter({f"q{i}": 1 for i in range(30)} | {"stuck": 1})
    assert {r["id"]: r for r in final if r["id"] in {f["id"] for f in first}} == {r["id"]: r for r in first}
    assert _stuck_item_calls(out, "stuck") == {"summary": "hit", "caption": "hit", "reasoning": "miss",
                                               "conclusion": "miss"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["this_run"]["items"] == 31 - len(first) and summary["items"] == 31


def test_rpm_holds_for_all_actors_together(cluster, tmp_path, fake_server_factory):
    """3 actors, one call at a time each: their requests overlap at the server (so several actors
    sent), yet together they keep to --rpm, counted from the server's own arrival times."""
    server = fake_server_factory(latency_ms=400)
    rpm = 240  # 4 requests a second for the whole cluster
    proc = stagewise("generate", _items(tmp_path, 6), "--out", tmp_path / "out", "--model", "hosted_vllm/fake",
                     "--api-base", server.api_base, "--no-progress", "--no-cache", "--rpm", str(rpm),
                     "--concurrency", "1", "--ray", cluster, "--ray-actors", "3", "--ray-batch-size", "2")
    assert proc.returncode == 0, proc.stderr
    log = server.get("/log")
    assert len(log) == 24
    assert server.get("/stats")["max_in_flight"] >= 2, "more than one actor sent requests"
    times = [e["t"] for e in log]
    for i, j in itertools.combinations(range(len(times)), 2):
        assert j - i <= rpm / 60 * (times[j] - times[i]) + 1, (i, j, times[j] - times[i])


def test_several_api_bases_are_spread_across_the_actors(cluster, tmp_path, fake_server_factory):
    """Two actors, two generator servers and two judge servers: each actor takes its own of each, and
    every judge call reaches a judge server. Each actor holds at most two single-item batches, and every
    item's first summary call waits at its server until both servers hold one: so both actors have
    work, however fast the first one starts. The cluster runs in the test's environment: the
    command's own reaches its actors."""
    gen = [fake_server_factory() for _ in range(2)]
    judge = [fake_server_factory() for _ in range(2)]
    items = write_items(tmp_path / "items.jsonl", [{"id": f"q{i}", "question": f"Which? ({i}) [[slow:summary]]",
                                                    "choices": ["A", "B"]} for i in range(8)])
    out = tmp_path / "out"
    proc = start_stagewise("generate", items, "--out", out, "--model", "hosted_vllm/fake",
                           "--api-base", ",".join(s.api_base for s in gen),
                           "--judge-api-base", ",".join(s.api_base for s in judge),
                           "--graph", "stage_beam", "--n", "2", "--no-progress", "--no-cache",
                           "--items-in-flight", "1", "--trace-prompts", "--ray", cluster, "--ray-actors", "2",
                           "--ray-batch-size", "1", env={"STAGEWISE_PRICE_PER_MTOK": "1000,2000"})
    wait_for(lambda: all(s.get("/stats").get("slow_waiting") for s in gen), "a stalled item at each server", 180)
    for s in gen:
        s.get("/release")
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    sent = [s.get("/stats").get("requests", 0) for s in gen + judge]
    assert all(sent), f"every server got requests: {sent}"
    calls = [t for t in read_jsonl(out / "traces.jsonl") if t["event"] == "llm.call"]
    assert sum(sent[2:]) == sum(t["role"] in ("judge", "check") for t in calls)
    # the command's options and STAGEWISE_* settings reach actors of a cluster started without them
    assert all(t["messages"] for t in calls) and all(t["cost_usd"] > 0 for t in calls)


def test_in_process_hf_model_in_two_actors(cluster, tmp_path):
    """Each actor loads its own copy of the shipped tiny model (hf:) and answers its batches."""
    items = write_items(tmp_path / "items.jsonl", [{"id": f"q{i}", "question": f"What is {i} + 1?"}
                                                   for i in range(4)])
    out = tmp_path / "out"
    proc = stagewise("generate", items, "--out", out, "--model", f"hf:{ROOT / 'stagewise' / 'model'}",
                     "--mode", "full", "--max-tokens", "8", "--no-progress", "--ray", cluster,
                     "--ray-actors", "2", "--ray-batch-size", "2", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode in (0, 3), proc.stderr
    rows = read_jsonl(out / "results.jsonl")
    assert sorted(r["id"] for r in rows) == [f"q{i}" for i in range(4)]
    assert all(r["error_cause"] in (None,) for r in rows), [r["error"] for r in rows]
    assert sum(r["usage"]["completion_tokens"] for r in rows) > 0


async def test_a_429_in_one_actor_slows_the_others(cluster):
    """Two actors' limits on one account, joined by a real limiter actor: a 429 seen by one halves
    the other's concurrency too (it learns of it with its next calls)."""
    import asyncio
    import time

    from stagewise.cluster.limiter import AccountLimiter
    from stagewise.cluster.shared_limits import ClusterLimits

    limiter = ray.remote(num_cpus=0)(AccountLimiter).remote(None, None)
    account = ("hosted_vllm", "http://127.0.0.1:1/v1")
    here, there = (ClusterLimits(limiter, account, 8, capped=False) for _ in range(2))

    async def calls_until(done, what: str) -> None:
        deadline = time.monotonic() + 30
        while not done():
            assert time.monotonic() < deadline, f"gave up waiting for {what}"
            await there.acquire(1.0)
            there.release(1.0, 1, 1)
            await asyncio.sleep(0.05)

    await calls_until(lambda: there._cuts_seen is not None, "a first look at the limiter")
    here.concurrency.on_rate_limited()  # a 429 in the other actor
    assert here.concurrency.limit == 4
    await calls_until(lambda: there.concurrency.limit == 4, "the other actor to slow down")
    assert ray.get(limiter.cuts.remote(account)) == 1
    ray.kill(limiter)
