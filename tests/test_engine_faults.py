"""Under a scripted faulty server every item ends exactly once: ok, or error with a reason."""
from __future__ import annotations

from collections import Counter

from conftest import read_jsonl, stagewise, write_items

FAULTS = {
    "rate": "[[429x2]]", "s500": "[[500x1]]", "s503": "[[503x2]]", "hang": "[[hang]]",
    "drop": "[[drop]]", "badjson": "[[badjson]]", "nullchoices": "[[nullchoices]]", "notags": "[[notags]]",
    "dead": "[[always500]]", "garbled": "[[badjson-always]]",
}


def test_every_item_ends_exactly_once_under_faults(tmp_path, fake_server_factory):
    server = fake_server_factory(hang_s=5)
    rows = [{"id": name, "question": f"Which bar is tallest? {d}"} for name, d in FAULTS.items()]
    rows += [{"id": f"plain{i}", "question": f"Plain question {i}?"} for i in range(6)]
    items = write_items(tmp_path / "items.jsonl", rows)
    out = tmp_path / "run"
    proc = stagewise("generate", items, "--out", out, "--model", "hosted_vllm/fake",
                     "--api-base", server.api_base, "--timeout", "1", "--max-retries", "3",
                     "--backoff", "0.01", "--no-progress", "--concurrency", "8")
    assert proc.returncode == 3, proc.stderr  # the run went to its end with error rows
    assert "2 item(s) ended in error (1 bad_output, 1 server)" in proc.stderr

    results = read_jsonl(out / "results.jsonl")
    ids = Counter(r["id"] for r in results)
    assert ids == Counter({r["id"]: 1 for r in rows}), "each id exactly once"
    by_id = {r["id"]: r for r in results}
    for name in ("rate", "s500", "s503", "hang", "drop", "badjson", "nullchoices", "notags",
                 *(f"plain{i}" for i in range(6))):
        assert by_id[name]["status"] == "ok", by_id[name]["error"]
        assert by_id[name]["stages"]["conclusion"].endswith("The answer is A.")
    assert by_id["dead"]["status"] == "error" and by_id["dead"]["error_cause"] == "server"
    assert by_id["garbled"]["status"] == "error" and by_id["garbled"]["error_cause"] == "bad_output"
    assert by_id["notags"]["stages"]["summary"] == "I will compare the bars, plan q=0."

    traces = read_jsonl(out / "traces.jsonl")
    calls = [t for t in traces if t["event"] == "llm.call"]
    retried = {t["item_id"] for t in calls if t["status"] == "retry"}
    assert retried >= {"rate", "s500", "s503", "hang", "drop", "badjson", "nullchoices", "dead", "garbled"}
    assert not retried & {f"plain{i}" for i in range(6)}
    kinds = {t["item_id"]: t["error"].split(":")[0] for t in calls if t["status"] == "retry"}
    assert kinds["rate"] == "rate_limit" and kinds["hang"] == "timeout" and kinds["drop"] == "connection"
    # a dead item is tried exactly max_retries + 1 times, then recorded as an error
    dead = [t for t in calls if t["item_id"] == "dead"]
    assert [t["attempt"] for t in dead] == [1, 2, 3, 4] and dead[-1]["status"] == "error"
    # every successful generation is traced once: 4 stages per ok item
    ok_calls = Counter(t["item_id"] for t in calls if t["status"] == "ok")
    assert all(ok_calls[r["id"]] == 4 for r in results if r["status"] == "ok")
    summary = (out / "summary.json").read_text()
    assert '"ok": 14' in summary and '"error": 2' in summary
    assert "2 error" in proc.stdout


def test_concurrency_cap_holds_at_the_server(tmp_path, fake_server_factory):
    server = fake_server_factory(latency_ms=20)
    items = write_items(tmp_path / "items.jsonl", [{"id": str(i), "question": f"q{i}"} for i in range(40)])
    stagewise("generate", items, "--out", tmp_path / "run", "--model", "hosted_vllm/fake", "--api-base",
              server.api_base, "--concurrency", "3", "--mode", "full", "--no-progress", check=True)
    stats = server.get("/stats")
    assert stats["requests"] == 40
    assert stats["max_in_flight"] <= 3
