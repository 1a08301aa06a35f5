"""A failed item is repaired by running again; exit statuses say how a run ended (docs/runs.md)."""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections import Counter

import pytest

from conftest import read_jsonl, stagewise, start_stagewise, write_items

from engine.results import ResultsFile


def _dead_api_base() -> str:
    """A loopback port with nothing listening: a mistyped --api-base."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _items(tmp_path, n=4):
    return write_items(tmp_path / "items.jsonl",
                       [{"id": f"q{i}", "question": f"Question {i}?", "answer": "A"} for i in range(n)])


def test_mistyped_api_base_then_the_right_one_repairs_every_item(tmp_path, fake_server):
    items, out = _items(tmp_path), tmp_path / "run"
    common = ["generate", items, "--out", out, "--model", "hosted_vllm/fake", "--no-progress",
              "--max-retries", "1", "--backoff", "0.01"]

    wrong = stagewise(*common, "--api-base", _dead_api_base())
    assert wrong.returncode == 3, wrong.stderr
    assert wrong.stderr.count("\n") == 1 and "4 item(s) ended in error (4 connection)" in wrong.stderr
    assert "0 calls, 8 requests (8 failed)" in wrong.stdout
    rows = read_jsonl(out / "results.jsonl")
    assert [r["error_cause"] for r in rows] == ["connection"] * 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["errors_by_cause"] == {"connection": 4}
    assert summary["attempts"] == 8 and summary["failed_attempts"] == 8 and summary["calls"] == 0

    right = stagewise(*common, "--api-base", fake_server.api_base)
    assert right.returncode == 0, right.stderr
    assert "4 items: 4 ok, 0 error" in right.stdout and "4 retried" in right.stdout
    rows = read_jsonl(out / "results.jsonl")
    assert Counter(r["id"] for r in rows) == Counter({f"q{i}": 1 for i in range(4)})
    assert all(r["status"] == "ok" and r["correct"] for r in rows)
    assert [r["error_cause"] for r in read_jsonl(out / "retried.jsonl")] == ["connection"] * 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["retried"] == 4 and summary["ok"] == 4 and summary["error"] == 0
    assert summary["attempts"] == 8 + 16 and summary["failed_attempts"] == 8  # earlier attempts still count

    again = stagewise(*common, "--api-base", fake_server.api_base)
    assert again.returncode == 0 and "this run: 0 items (0 retried)" in again.stdout
    assert fake_server.get("/stats")["requests"] == 16, "nothing left to run"


def test_input_errors_stay_errors_unless_asked(tmp_path, fake_server):
    from PIL import Image

    items = write_items(tmp_path / "items.jsonl", [
        {"id": "fine", "question": "Colour?"},
        {"id": "later", "question": "Colour?", "image": "later.png"},
        {"id": "dead", "question": "Colour? [[always500]]"},
    ])
    out = tmp_path / "run"
    args = ["generate", items, "--out", out, "--model", "hosted_vllm/fake", "--api-base",
            fake_server.api_base, "--no-progress", "--max-retries", "0"]
    first = stagewise(*args)
    assert first.returncode == 3 and "2 item(s) ended in error" in first.stderr
    causes = {r["id"]: r["error_cause"] for r in read_jsonl(out / "results.jsonl")}
    assert causes == {"fine": None, "later": "input", "dead": "server"}

    Image.new("RGB", (32, 32), "red").save(tmp_path / "later.png")  # the user fixes the input
    second = stagewise(*args)  # default: only the server's error is retried (and fails again)
    assert second.returncode == 3
    rows = {r["id"]: r for r in read_jsonl(out / "results.jsonl")}
    assert rows["later"]["error_cause"] == "input" and rows["dead"]["error_cause"] == "server"
    assert [r["id"] for r in read_jsonl(out / "retried.jsonl")] == ["dead"]

    assert stagewise(*args, "--retry-errors", "none").returncode == 3
    assert [r["id"] for r in read_jsonl(out / "retried.jsonl")] == ["dead"], "none retries nothing"

    third = stagewise(*args, "--retry-errors", "all")
    assert third.returncode == 3  # "dead" still fails; "later" is repaired
    rows = read_jsonl(out / "results.jsonl")
    assert Counter(r["id"] for r in rows) == Counter({"fine": 1, "later": 1, "dead": 1})
    assert {r["id"]: r["status"] for r in rows} == {"fine": "ok", "later": "ok", "dead": "error"}


def test_kill_9_during_compaction_loses_no_finished_row(tmp_path, fake_server):
    """A big results file whose error rows must be moved out; kill -9 the moment the move starts and
    the moment the new file is being written: every finished row survives, each id once."""
    n = 40_000
    items = write_items(tmp_path / "items.jsonl", [{"id": f"q{i}", "question": "Q?"} for i in range(n)])
    out = tmp_path / "run"
    out.mkdir()
    pad = "x" * 200
    original = "".join(json.dumps(
        {"id": f"q{i}", "status": "ok", "error": None, "pad": pad} if i % 1000 else
        {"id": f"q{i}", "status": "error", "error": "model call failed (server): HTTP 500", "error_cause": "server"}
    ) + "\n" for i in range(n))
    ok_ids = {f"q{i}" for i in range(n) if i % 1000}
    error_ids = {f"q{i}" for i in range(0, n, 1000)}
    args = ["generate", items, "--out", out, "--model", "hosted_vllm/fake", "--api-base", fake_server.api_base,
            "--no-progress", "--mode", "full"]
    for target in ("retried.jsonl", "results.jsonl.tmp", "results.jsonl.tmp", "retried.jsonl"):
        (out / "results.jsonl").write_text(original)
        (out / "retried.jsonl").unlink(missing_ok=True)
        proc = start_stagewise(*args)
        deadline = time.monotonic() + 60
        while not (out / target).exists() and proc.poll() is None and time.monotonic() < deadline:
            pass  # spin: the window is milliseconds wide
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        rows = read_jsonl(out / "results.jsonl")
        ids = Counter(r["id"] for r in rows)
        assert max(ids.values()) == 1, "an id twice"
        assert ok_ids <= set(ids), "a finished row was lost"
        moved = {r["id"] for r in read_jsonl(out / "retried.jsonl")} if (out / "retried.jsonl").exists() else set()
        assert error_ids <= set(ids) | moved, "an error row vanished"
    assert stagewise(*args).returncode == 0
    rows = read_jsonl(out / "results.jsonl")
    assert len(rows) == n and all(r["status"] == "ok" for r in rows)


def test_a_torn_trace_line_is_cut_before_appending(tmp_path, fake_server):
    items, out = _items(tmp_path, 2), tmp_path / "run"
    out.mkdir()
    (out / "traces.jsonl").write_text('{"event": "llm.call", "item_id": "q0"}\n{"event": "llm.ca')
    (out / "results.jsonl").write_text('{"id": "q0", "status": "ok"}\n{"id": "q1", "sta')
    stagewise("generate", items, "--out", out, "--model", "hosted_vllm/fake", "--api-base", fake_server.api_base,
              "--no-progress", check=True)
    traces = read_jsonl(out / "traces.jsonl")  # every line parses
    assert traces[0] == {"event": "llm.call", "item_id": "q0"} and traces[-1]["event"] == "item.end"
    assert [r["id"] for r in read_jsonl(out / "results.jsonl")] == ["q0", "q1"]


def test_results_open_in_datasets_one_row_per_id(tmp_path, fake_server):
    datasets = pytest.importorskip("datasets")
    items = write_items(tmp_path / "items.jsonl", [
        {"id": "a", "question": "Q?", "answer": "A"}, {"id": "b", "question": "Q? [[always500]]", "answer": "A"},
        "{broken", {"id": 7, "question": "Q?", "answer": 3, "choices": ["x", "y"]}])
    out = tmp_path / "run"
    args = ["generate", items, "--out", out, "--model", "hosted_vllm/fake", "--api-base", fake_server.api_base,
            "--no-progress", "--max-retries", "0"]
    assert stagewise(*args).returncode == 3
    assert stagewise(*args).returncode == 3  # a rerun retries "b": still one row per id
    ds = datasets.load_dataset("json", data_files=str(out / "results.jsonl"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert sorted(ds["id"]) == ["7", "a", "b", "line-3"]
    by_id = {r["id"]: r for r in ds}
    assert by_id["a"]["status"] == "ok" and by_id["a"]["stages"]["conclusion"]
    assert by_id["b"]["error_cause"] == "server" and by_id["line-3"]["error_cause"] == "input"


def test_compare_counts_error_rows_as_wrong(tmp_path, fake_server):
    items = write_items(tmp_path / "items.jsonl", [
        {"id": f"q{i}", "question": "Q?" + (" [[always500]]" if i == 0 else ""), "answer": "A"} for i in range(4)])
    out = tmp_path / "cmp"
    proc = stagewise("compare", items, "--out", out, "--graphs", "chain,best_of_n", "--mode", "full", "--n", "2",
                     "--model", "hosted_vllm/fake", "--api-base", fake_server.api_base, "--no-progress",
                     "--max-retries", "0")
    assert proc.returncode == 3 and proc.stderr.count("\n") == 1 and "(2 server)" in proc.stderr
    report = {g["graph"]: g for g in json.loads((out / "report.json").read_text())["graphs"]}
    assert report["chain"]["accuracy"] == 0.75 and report["chain"]["errors"] == 1
    assert report["best_of_n"]["accuracy"] == 0.75 and report["best_of_n"]["errors"] == 1


def test_a_move_cut_short_by_kill_9_is_redone_and_counted_once(tmp_path, fake_server):
    items, out = _items(tmp_path), tmp_path / "run"
    common = ["generate", items, "--out", out, "--model", "hosted_vllm/fake", "--no-progress",
              "--max-retries", "1", "--backoff", "0.01"]
    assert stagewise(*common, "--api-base", _dead_api_base()).returncode == 3
    assert json.loads((out / "summary.json").read_text())["attempts"] == 8
    # what kill -9 leaves between the move's append to retried.jsonl and the rename of results.jsonl
    (out / "retried.jsonl").write_bytes((out / "results.jsonl").read_bytes())

    kept = stagewise(*common, "--api-base", fake_server.api_base, "--retry-errors", "none")
    assert kept.returncode == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attempts"] == 8 and summary["failed_attempts"] == 8, "a row in both files counts once"

    right = stagewise(*common, "--api-base", fake_server.api_base)
    assert right.returncode == 0, right.stderr
    assert Counter(r["id"] for r in read_jsonl(out / "retried.jsonl")) == Counter({f"q{i}": 1 for i in range(4)})
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attempts"] == 8 + 16 and summary["failed_attempts"] == 8
    starts = [e for e in read_jsonl(out / "traces.jsonl") if e["event"] == "item.start"]
    assert sorted(e["attempt"] for e in starts) == [1] * 4 + [2] * 4


@pytest.mark.parametrize("junk", [b'{"id": "a", "status": "ok"}\n', b"not a row\n"])
def test_junk_then_a_blank_line_is_still_rewritten_away(tmp_path, junk):
    path = tmp_path / "results.jsonl"
    row = b'{"id": "a", "status": "ok"}\n'
    path.write_bytes(row + junk + b"\n")
    ResultsFile(path).close()
    assert path.read_bytes() == row
