"""The same seed gives the same picks, whatever the order in which replies arrive.

The scripted server delays every reply by a random amount ([[jitter:MS]], unseeded, so each run sees a
new arrival order) and its judge never gives a readable verdict ([[judge-garbage]]), so every
comparison ends in a random tie-break while the bracket's other comparisons are still running.
"""
from __future__ import annotations

from conftest import read_jsonl, stagewise, write_items

ITEMS = 6


def _run(tmp_path, server, name, seed, *extra):
    items = write_items(tmp_path / "items.jsonl", [
        {"id": f"d{i}", "question": f"Which bar is the tallest? ({i}) [[judge-garbage]] [[jitter:40]]",
         "answer": "A"} for i in range(ITEMS)])
    out = tmp_path / name  # its own cache: nothing is replayed from another run
    stagewise("generate", items, "--out", out, "--graph", "stage_beam", "--n", "4", "--seed", seed,
              "--model", "hosted_vllm/fake", "--api-base", server.api_base, "--no-progress", *extra, check=True)
    traces = read_jsonl(out / "traces.jsonl")
    picks = {(v["item_id"], v["stage"], tuple(v["pair"]), v["winner"])
             for v in traces if v["event"] == "judge.verdict"}
    fallbacks = sum(v["parse"] == "fallback" for v in traces if v["event"] == "judge.verdict")
    results = {r["id"]: (r["status"], r["response"]) for r in read_jsonl(out / "results.jsonl")}
    return picks, fallbacks, results


def test_same_seed_same_picks_under_random_reply_timing(tmp_path, fake_server):
    runs = [_run(tmp_path, fake_server, f"seed1_{k}", 1) for k in range(3)]
    picks, fallbacks, results = runs[0]
    assert len(picks) == ITEMS * 4 * 3 and fallbacks == len(picks), "every verdict a tie-break"
    assert all(status == "ok" for status, _ in results.values())
    for other_picks, _, other_results in runs[1:]:
        assert other_picks == picks
        assert other_results == results
    other_seed, _, _ = _run(tmp_path, fake_server, "seed2", 2)
    assert other_seed != picks, "another seed, other picks"


def test_a_rerun_served_from_the_cache_picks_the_same(tmp_path, fake_server):
    first = _run(tmp_path, fake_server, "live", 3)
    cache = tmp_path / "live" / "cache.sqlite"
    replayed = _run(tmp_path, fake_server, "replayed", 3, "--cache", cache)
    assert replayed == first
