"""Identical candidates cost no judge call: the first wins, parse "same", and judge quality skips them.

Against the scripted server (tests/fake_server.py), whose [[same:summary]] makes every SUMMARY candidate
of a request the same text (a model that repeats itself) while the other stages stay distinct; --faithful
keeps the reference's behaviour and judges them anyway.
"""
from __future__ import annotations

import json
from collections import Counter

from conftest import read_jsonl, stagewise, write_items
from engine.trace_events import parse_event

N = 4
ITEMS = 2


def _run(tmp_path, server, *extra, name):
    items = write_items(tmp_path / "items.jsonl", [
        {"id": f"s{i}", "question": f"Which bar is the tallest? ({i}) [[same:summary]]", "answer": "A"}
        for i in range(ITEMS)])
    out = tmp_path / name
    stagewise("generate", items, "--out", out, "--graph", "stage_beam", "--mode", "staged", "--n", N,
              "--model", "hosted_vllm/fake", "--api-base", server.api_base, "--no-progress", *extra, check=True)
    rows, traces = read_jsonl(out / "results.jsonl"), read_jsonl(out / "traces.jsonl")
    assert len(rows) == ITEMS and all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    judge_calls = Counter(t["stage"] for t in traces if t["event"] == "llm.call" and t["role"] in ("judge", "check"))
    return out, traces, judge_calls


def test_identical_candidates_are_not_judged(tmp_path, fake_server):
    out, traces, judge_calls = _run(tmp_path, fake_server, name="default")
    for e in traces:
        parse_event(e)  # "same" is part of the documented format
    summaries = Counter(t["text"] for t in traces if t["event"] == "candidate" and t["stage"] == "summary")
    assert list(summaries.values()) == [ITEMS * N]  # the stage's N candidates are one text
    assert judge_calls["summary"] == 0
    assert judge_calls["caption"] == ITEMS * (N - 1)  # distinct candidates are still judged
    same = [v for v in traces if v["event"] == "judge.verdict" and v["stage"] == "summary"]
    assert len(same) == ITEMS * (N - 1)
    for v in same:
        assert v["parse"] == "same" and v["winner"] == v["pair"][0]
        assert (v["reason"], v["outputs"], v["orders"], v["agreed"]) == ("the two candidates are the same text",
                                                                         [], [], None)
    assert not any(v["parse"] == "same" for v in traces if v["event"] == "judge.verdict" and v["stage"] != "summary")
    judge = json.loads((out / "summary.json").read_text())["judge"]["stages"]
    assert "summary" not in judge and judge["caption"]["verdicts"] == ITEMS * (N - 1)


def test_faithful_still_judges_identical_candidates(tmp_path, fake_server):
    _, traces, judge_calls = _run(tmp_path, fake_server, "--faithful", name="faithful")
    assert judge_calls["summary"] == ITEMS * (N - 1)
    assert not any(v["parse"] == "same" for v in traces if v["event"] == "judge.verdict")


def test_judges_sample_at_their_own_temperature(tmp_path, fake_server):
    """--judge-temperature sets judge and pre-check calls' temperature and leaves generation's alone."""
    _, traces, _ = _run(tmp_path, fake_server, "--temperature", "1.3", "--judge-temperature", "0", name="cold-judge")
    calls = [t for t in traces if t["event"] == "llm.call"]
    by_role = {role: {t["temperature"] for t in calls if t["role"] == role} for role in ("generate", "judge", "check")}
    assert by_role == {"generate": {1.3}, "judge": {0.0}, "check": {0.0}}
    _, traces, _ = _run(tmp_path, fake_server, "--temperature", "1.3", name="same-temperature")
    assert {t["temperature"] for t in traces if t["event"] == "llm.call"} == {1.3}
