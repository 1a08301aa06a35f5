"""kill -9 mid-run, then the same command: every item exactly once, finished calls from the cache."""
from __future__ import annotations

import json
import os
import signal
from collections import Counter

from conftest import read_jsonl, rows_in, stagewise, start_stagewise, wait_for, write_items


def test_kill_9_then_resume(tmp_path, fake_server_factory):
    server = fake_server_factory(latency_ms=5)
    rows = [{"id": f"q{i}", "question": f"Question {i}?"} for i in range(30)]
    rows.insert(3, {"id": "stuck", "question": "This one stalls in its reasoning stage [[slow:reasoning]]"})
    items = write_items(tmp_path / "items.jsonl", rows)
    out = tmp_path / "run"
    args = ["generate", items, "--out", out, "--model", "hosted_vllm/fake", "--api-base", server.api_base,
            "--concurrency", "4", "--no-progress"]
    proc = start_stagewise(*args)
    results = out / "results.jsonl"
    # "stuck" has finished its summary and caption calls and waits on reasoning; others keep finishing
    wait_for(lambda: server.get("/stats").get("slow_waiting") == 1, "the stalled reasoning call")
    wait_for(lambda: rows_in(results) >= 10, "10 finished rows")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = read_jsonl(results)
    assert "stuck" not in {r["id"] for r in first} and len(first) < 31

    stagewise(*args, check=True)  # the same command again
    final = read_jsonl(results)
    assert Counter(r["id"] for r in final) == Counter({r["id"]: 1 for r in rows})
    assert all(r["status"] == "ok" for r in final)

    traces = [json.loads(line) for line in (out / "traces.jsonl").read_text().splitlines()
              if line.strip().startswith("{") and line.strip().endswith("}")]
    stuck_calls = [t for t in traces if t["event"] == "llm.call" and t["item_id"] == "stuck"]
    resumed = {t["stage"]: t["cache"] for t in stuck_calls[-4:]}
    assert resumed == {"summary": "hit", "caption": "hit", "reasoning": "miss", "conclusion": "miss"}
    ends = Counter(t["item_id"] for t in traces if t["event"] == "item.end")
    assert all(ends[r["id"]] <= 1 for r in first), "finished items are not run again"
    # an item ended by the second run ended once there; it may also have ended in the first, killed
    # between its item.end event and its row (at most one such item per concurrency slot)
    second = [r["id"] for r in final if r["id"] not in {f["id"] for f in first}]
    assert all(ends[i] >= 1 for i in second) and sum(ends[i] - 1 for i in second) <= 4, ends


def test_rerun_replays_from_cache_at_no_cost(tmp_path, fake_server):
    items = write_items(tmp_path / "items.jsonl", [{"id": f"q{i}", "question": f"Q{i}"} for i in range(5)])
    common = ["--model", "hosted_vllm/fake", "--api-base", fake_server.api_base, "--no-progress",
              "--cache", tmp_path / "shared.sqlite"]
    env = {"STAGEWISE_PRICE_PER_MTOK": "1000,2000"}  # give the fake model a price
    stagewise("generate", items, "--out", tmp_path / "a", *common, env=env, check=True)
    before = fake_server.get("/stats")["requests"]
    stagewise("generate", items, "--out", tmp_path / "b", *common, env=env, check=True)
    assert fake_server.get("/stats")["requests"] == before, "second run made no request"
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in "ab")
    assert a["calls"] == b["calls"] == 20 and a["cost_usd"] > 0
    assert b["cache_hits"] == 20 and b["cost_usd"] == 0
    calls = [t for t in read_jsonl(tmp_path / "b" / "traces.jsonl") if t["event"] == "llm.call"]
    assert len(calls) == 20 and all(t["cache"] == "hit" and t["cost_usd"] == 0 for t in calls)
    ra = {r["id"]: r["stages"] for r in read_jsonl(tmp_path / "a" / "results.jsonl")}
    rb = {r["id"]: r["stages"] for r in read_jsonl(tmp_path / "b" / "results.jsonl")}
    assert ra == rb


def test_ctrl_c_stops_cleanly_and_keeps_finished_rows(tmp_path, fake_server_factory):
    server = fake_server_factory(latency_ms=5)
    rows = [{"id": f"q{i}", "question": f"Question {i}?"} for i in range(20)]
    rows.insert(2, {"id": "stuck", "question": "Stalls [[slow:caption]]"})
    items = write_items(tmp_path / "items.jsonl", rows)
    out = tmp_path / "run"
    args = ["generate", items, "--out", out, "--model", "hosted_vllm/fake", "--api-base", server.api_base,
            "--concurrency", "2", "--no-progress"]
    proc = start_stagewise(*args)
    wait_for(lambda: server.get("/stats").get("slow_waiting") == 1, "the stalled call")
    wait_for(lambda: rows_in(out / "results.jsonl") >= 5, "5 finished rows")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "rerun the same command to resume" in err
    done = read_jsonl(out / "results.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items"] == len(done) >= 5 and "stuck" not in {r["id"] for r in done}
    server.get("/release")
    stagewise(*args, check=True)
    assert Counter(r["id"] for r in read_jsonl(out / "results.jsonl")) == Counter({r["id"]: 1 for r in rows})


def test_ctrl_c_while_calls_wait_for_slots_records_no_failure(tmp_path, fake_server_factory):
    """stage_beam with --concurrency below its parallel calls: many calls wait for a slot when Ctrl-C
    comes. None of them may become an error row; the rerun finishes every item once."""
    server = fake_server_factory(latency_ms=30)
    rows = [{"id": f"q{i}", "question": f"Question {i}?", "answer": "A"} for i in range(12)]
    rows.insert(1, {"id": "stuck", "question": "Stalls [[slow:caption]]", "answer": "A"})  # the run cannot end first
    items = write_items(tmp_path / "items.jsonl", rows)
    out = tmp_path / "run"
    args = ["generate", items, "--out", out, "--model", "hosted_vllm/fake", "--api-base", server.api_base,
            "--graph", "stage_beam", "--n", "4", "--concurrency", "2", "--items-in-flight", "6", "--no-progress"]
    proc = start_stagewise(*args)
    wait_for(lambda: rows_in(out / "results.jsonl") >= 2, "2 finished rows")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    first = read_jsonl(out / "results.jsonl")
    assert first and all(r["status"] == "ok" for r in first), [r["error"] for r in first if r["status"] != "ok"]
    assert len(first) < len(rows) and "stuck" not in {r["id"] for r in first}
    server.get("/release")
    stagewise(*args, check=True)
    final = read_jsonl(out / "results.jsonl")
    assert Counter(r["id"] for r in final) == Counter({r["id"]: 1 for r in rows})
    assert all(r["status"] == "ok" for r in final)


def test_a_second_run_on_a_folder_in_use_exits_2_and_writes_nothing(tmp_path, fake_server):
    items = write_items(tmp_path / "items.jsonl", [{"id": "stuck", "question": "Stalls [[slow:caption]]"}])
    out = tmp_path / "run"
    args = ["generate", items, "--out", out, "--model", "hosted_vllm/fake", "--api-base", fake_server.api_base,
            "--no-progress", "--no-cache"]  # no cache: the stalled first run writes nothing until released
    first = start_stagewise(*args)
    wait_for(lambda: fake_server.get("/stats").get("slow_waiting") == 1, "the first run's stalled call")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    second = stagewise(*args)
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1 and f"{out} is in use by another stagewise run" in lines[0]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before, "the second run wrote"
    fake_server.get("/release")
    assert first.wait(timeout=120) == 0, first.stderr.read()
    assert stagewise(*args).returncode == 0  # the lock goes with the run that held it
    assert [r["id"] for r in read_jsonl(out / "results.jsonl")] == ["stuck"]


def test_a_rerun_with_other_answer_shaping_options_is_refused(tmp_path, fake_server):
    """The rows were made at --temperature 0.6 with --n 4: a rerun asking 1.5 would keep them and report
    1.5 (docs/runs.md). It exits 2 naming both, and changes nothing; other options may change."""
    items = write_items(tmp_path / "items.jsonl", [{"id": f"q{i}", "question": f"Which? ({i})"} for i in range(3)])
    out = tmp_path / "run"
    base = ["generate", items, "--out", out, "--model", "hosted_vllm/fake", "--api-base", fake_server.api_base,
            "--graph", "best_of_n", "--no-progress"]
    stagewise(*base, check=True)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert json.loads((out / "options.json").read_text())["temperature"] == 0.6

    changed = stagewise(*base, "--temperature", "1.5", "--n", "2")
    lines = changed.stderr.strip().splitlines()
    assert changed.returncode == 2 and len(lines) == 1, changed.stderr
    assert "--n 4 --temperature 0.6" in lines[0] and "asks --n 2 --temperature 1.5" in lines[0]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

    again = stagewise(*base, "--concurrency", "3", "--max-retries", "1", "--no-cache")
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "summary.json").read_text())["this_run"]["items"] == 0


def test_compare_checks_every_graph_before_running_any(tmp_path, fake_server):
    items = write_items(tmp_path / "items.jsonl", [{"id": "a", "question": "Which?"}])
    out = tmp_path / "cmp"
    common = ["--out", out, "--model", "hosted_vllm/fake", "--api-base", fake_server.api_base, "--no-progress"]
    stagewise("compare", items, "--graphs", "best_of_n", *common, check=True)
    proc = stagewise("compare", items, "--graphs", "chain,best_of_n", "--judge-order", "both", *common)
    assert proc.returncode == 2 and f"{out / 'best_of_n'} holds rows made with --judge-order first" in proc.stderr
    assert not (out / "chain").exists()
