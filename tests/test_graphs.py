"""Every graph makes exactly the calls of docs/architecture.md's table and keeps the best candidate.

The scripted server gives the n candidates of one request distinct qualities q = 0..n-1 (written into
their text) and its judge prefers the higher q, so a correct search ends with q = n-1 everywhere.
"""
from __future__ import annotations

import re
from collections import Counter

import pytest

from conftest import read_jsonl, stagewise, write_items

N = 4
TABLE = {  # graph, mode → calls per item (reasoning pre-checks: 2 per comparison, both pass)
    ("chain", "staged"): 4,
    ("chain", "full"): 1,
    ("best_of_n", "full"): N + (N - 1),
    ("stage_beam", "staged"): 4 * N + 4 * (N - 1) + 2 * (N - 1),
    ("stage_beam", "full"): 4 * N + 4 * (N - 1) + 2 * (N - 1),
    ("sentence_beam", "full"): 4 * (2 * N - 1),     # 4 sentences on this server
    ("sentence_beam", "staged"): 4 * (2 * N - 1),
    ("vote", "full"): N,                            # every candidate concludes "A": no tie to judge
}
BOTH = 2  # --judge-order both: every pairwise comparison is asked twice (pre-checks once)
TABLE_BOTH = {
    ("chain", "staged"): 4,
    ("best_of_n", "full"): N + BOTH * (N - 1),
    ("stage_beam", "staged"): 4 * N + BOTH * 4 * (N - 1) + 2 * (N - 1),
    ("stage_beam", "full"): 4 * N + BOTH * 4 * (N - 1) + 2 * (N - 1),
    ("sentence_beam", "full"): 4 * (N + BOTH * (N - 1)),
    ("vote", "full"): N,
}
JUDGED = {"chain": 0, "best_of_n": N - 1, "stage_beam": 4 * (N - 1), "sentence_beam": 4 * (N - 1), "vote": 0}


def _run(tmp_path, server, graph, mode, *extra, items=None, name="run"):
    items = items or write_items(tmp_path / "items.jsonl", [
        {"id": f"g{i}", "question": f"Which bar is the tallest? ({i})", "answer": "A"} for i in range(3)])
    out = tmp_path / name
    stagewise("generate", items, "--out", out, "--graph", graph, "--mode", mode, "--n", N,
              "--model", "hosted_vllm/fake", "--api-base", server.api_base, "--no-progress", *extra,
              check=True)
    return out, read_jsonl(out / "results.jsonl"), read_jsonl(out / "traces.jsonl")


def _check_calls_and_winners(rows, traces, graph, expected_calls):
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    calls = Counter(t["item_id"] for t in traces if t["event"] == "llm.call")
    for r in rows:
        assert r["usage"]["calls"] == expected_calls == calls[r["id"]]
        assert r["correct"] is True
        if graph not in ("chain", "vote"):
            for stage, text in r["stages"].items():
                assert re.findall(r"q=(\d+)", text) == [str(N - 1)], (stage, text)
    verdicts = [t for t in traces if t["event"] == "judge.verdict"]
    assert len(verdicts) == 3 * JUDGED[graph]
    return verdicts


@pytest.mark.parametrize("graph,mode", list(TABLE))
def test_calls_match_the_table_and_the_best_candidate_wins(tmp_path, fake_server, graph, mode):
    out, rows, traces = _run(tmp_path, fake_server, graph, mode)
    verdicts = _check_calls_and_winners(rows, traces, graph, TABLE[graph, mode])
    # the scripted server returns logprobs (the sampled token at probability 1): verdicts read from them
    assert all(v["parse"] in ("logprob", "precheck") for v in verdicts)


@pytest.mark.parametrize("graph,mode", list(TABLE_BOTH))
def test_calls_per_item_with_both_orders(tmp_path, fake_server, graph, mode):
    out, rows, traces = _run(tmp_path, fake_server, graph, mode, "--judge-order", "both")
    verdicts = _check_calls_and_winners(rows, traces, graph, TABLE_BOTH[graph, mode])
    judged = [v for v in verdicts if v["parse"] != "precheck"]
    assert all(v["parse"] == "ok" and v["agreed"] is True and len(v["orders"]) == 2 for v in judged)
    assert all([o["pair"] for o in v["orders"]] == [v["pair"], v["pair"][::-1]] for v in judged)
    judge_calls = Counter(t["judge_order"] for t in traces if t["event"] == "llm.call" and t["role"] == "judge")
    assert judge_calls[1] == judge_calls[2] == 3 * JUDGED[graph] - sum(v["parse"] == "precheck" for v in verdicts)


def test_stage_beam_continues_the_exact_prefix_in_full_mode(tmp_path, fake_server):
    _, rows, traces = _run(tmp_path, fake_server, "stage_beam", "full")
    generate = [t for t in traces if t["event"] == "llm.call" and t["role"] == "generate"]
    assert {t["continued"] for t in generate} == {True}
    _, rows, traces = _run(tmp_path, fake_server, "stage_beam", "staged", name="staged")
    generate = [t for t in traces if t["event"] == "llm.call" and t["role"] == "generate"]
    assert "continued" not in generate[0]  # restated: each stage's own prompt


def _verdicts(traces):
    return [(v["item_id"], v["stage"], tuple(v["pair"]), v["winner"], v["parse"])
            for v in traces if v["event"] == "judge.verdict"]


def test_faithful_knockout_is_reproducible_with_a_seed(tmp_path, fake_server):
    args = ("--faithful", "--selection", "knockout", "--seed", "7", "--no-cache", "--concurrency", "1")
    _, rows_a, traces_a = _run(tmp_path, fake_server, "stage_beam", "staged", *args, name="a")
    _, rows_b, traces_b = _run(tmp_path, fake_server, "stage_beam", "staged", *args, name="b")
    assert _verdicts(traces_a) == _verdicts(traces_b) and len(_verdicts(traces_a)) == 3 * 4 * (N - 1)
    _, _, traces_c = _run(tmp_path, fake_server, "stage_beam", "staged", "--faithful", "--selection",
                          "knockout", "--seed", "8", "--no-cache", name="c")
    pairs = lambda tr: [v[2] for v in _verdicts(tr)]  # noqa: E731
    assert pairs(traces_a) != pairs(traces_c), "another seed, another knockout order"


def test_unparseable_verdicts_fall_back(tmp_path, fake_server):
    items = write_items(tmp_path / "items.jsonl", [{"id": "x", "question": "Tallest? [[judge-garbage]]"}])
    _, rows, traces = _run(tmp_path, fake_server, "best_of_n", "full", "--faithful", items=items, name="f")
    verdicts = [v for v in traces if v["event"] == "judge.verdict"]
    assert rows[0]["status"] == "ok" and len(verdicts) == N - 1
    assert all(v["parse"] == "fallback" and v["winner"] == v["pair"][1] for v in verdicts)
    judge_calls = [t for t in traces if t["event"] == "llm.call" and t["role"] == "judge"]
    assert len(judge_calls) == N - 1  # faithful: no retry

    _, rows, traces = _run(tmp_path, fake_server, "best_of_n", "full", items=items, name="d")
    verdicts = [v for v in traces if v["event"] == "judge.verdict"]
    judge_calls = [t for t in traces if t["event"] == "llm.call" and t["role"] == "judge"]
    assert rows[0]["status"] == "ok" and all(v["parse"] == "fallback" for v in verdicts)
    assert len(judge_calls) == 2 * (N - 1)  # default: one retry each, then a random tie-break
