"""`--faithful` runs the reference whole: its sequential random knockout as well as its verdict rule."""
from __future__ import annotations

from collections import Counter

from conftest import read_jsonl, stagewise, write_items

N = 4


def _items(tmp_path):
    return write_items(tmp_path / "items.jsonl", [
        {"id": f"f{i}", "question": f"Which bar is the tallest? ({i})", "answer": "A"} for i in range(2)])


def _generate(tmp_path, server, *extra, name="run"):
    return stagewise("generate", _items(tmp_path), "--out", tmp_path / name, "--graph", "stage_beam",
                     "--n", N, "--model", "hosted_vllm/fake", "--api-base", server.api_base, "--no-progress",
                     *extra)


def test_faithful_selects_with_the_reference_knockout(tmp_path, fake_server):
    proc = _generate(tmp_path, fake_server, "--faithful")
    assert proc.returncode == 0, proc.stderr
    traces = read_jsonl(tmp_path / "run" / "traces.jsonl")
    verdicts = [v for v in traces if v["event"] == "judge.verdict"]
    assert {v["selection"] for v in verdicts} == {"knockout"}
    assert Counter((v["item_id"], v["stage"]) for v in verdicts) == {
        (f"f{i}", s): N - 1 for i in range(2) for s in ("summary", "caption", "reasoning", "conclusion")}
    rows = read_jsonl(tmp_path / "run" / "results.jsonl")
    assert all(r["status"] == "ok" and r["correct"] for r in rows)


def test_faithful_with_an_explicit_bracket_is_a_usage_error(tmp_path, fake_server):
    proc = _generate(tmp_path, fake_server, "--faithful", "--selection", "bracket")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--faithful" in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()


def test_faithful_refuses_a_graph_file_that_asks_for_the_bracket(tmp_path, fake_server):
    toml = tmp_path / "beam.toml"
    toml.write_text('name = "beam"\nselection = "bracket"\n[[steps]]\nstage = "full"\nn = 2\n')
    proc = stagewise("generate", _items(tmp_path), "--out", tmp_path / "run", "--graph", toml, "--faithful",
                     "--model", "hosted_vllm/fake", "--api-base", fake_server.api_base, "--no-progress")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "bracket" in proc.stderr, proc.stderr


def test_without_faithful_the_bracket_stays_the_default(tmp_path, fake_server):
    proc = _generate(tmp_path, fake_server)
    assert proc.returncode == 0, proc.stderr
    traces = read_jsonl(tmp_path / "run" / "traces.jsonl")
    assert {v["selection"] for v in traces if v["event"] == "judge.verdict"} == {"bracket"}
