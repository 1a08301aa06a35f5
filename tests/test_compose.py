"""Graphs written by users (TOML and Python) and `stagewise compare`'s report."""
from __future__ import annotations

import json
from collections import Counter

from PIL import Image

from conftest import read_jsonl, stagewise, write_items


def _items(tmp_path):
    return write_items(tmp_path / "items.jsonl", [
        {"id": f"c{i}", "question": f"Tallest bar? ({i})", "answer": "A"} for i in range(4)])


def test_toml_graph_with_its_own_steps_and_judge_model(tmp_path, fake_server):
    toml = tmp_path / "two_beams.toml"
    toml.write_text('name = "two_beams"\nselection = "knockout"\n[models]\njudge = "hosted_vllm/judge"\n'
                    '[[steps]]\nstage = "summary"\nn = 2\n[[steps]]\nstage = "caption"\nn = 3\n'
                    '[[steps]]\nstage = "reasoning"\n[[steps]]\nstage = "conclusion"\n')
    out = tmp_path / "run"
    stagewise("generate", _items(tmp_path), "--out", out, "--graph", toml, "--model", "hosted_vllm/fake",
              "--api-base", fake_server.api_base, "--no-progress", check=True)
    rows = read_jsonl(out / "results.jsonl")
    assert all(r["status"] == "ok" and r["graph"] == "two_beams" for r in rows)
    assert all(r["usage"]["calls"] == 2 + 1 + 3 + 2 + 1 + 1 for r in rows)
    assert all("q=2" in r["stages"]["caption"] and "q=1" in r["stages"]["summary"] for r in rows)
    calls = [t for t in read_jsonl(out / "traces.jsonl") if t["event"] == "llm.call"]
    assert Counter((t["role"], t["model"]) for t in calls) == Counter(
        {("generate", "hosted_vllm/fake"): 4 * 7, ("judge", "hosted_vllm/judge"): 4 * 3})
    assert {v["selection"] for v in read_jsonl(out / "traces.jsonl") if v["event"] == "judge.verdict"} == {"knockout"}


def test_python_graph_from_the_primitives(tmp_path, fake_server):
    py = tmp_path / "my_graphs.py"
    py.write_text(
        "async def caption_beam(ops, settings):\n"
        "    text = (await ops.generate('', 'summary', 1))[0]\n"
        "    candidates = await ops.generate(text, 'caption', settings.n)\n"
        "    text = candidates[await ops.select(candidates, 'caption')]\n"
        "    for stage in ('reasoning', 'conclusion'):\n"
        "        text = (await ops.generate(text, stage, 1))[0]\n"
        "    return text\n")
    out = tmp_path / "run"
    stagewise("generate", _items(tmp_path), "--out", out, "--graph", f"{py}:caption_beam", "--n", "4",
              "--model", "hosted_vllm/fake", "--api-base", fake_server.api_base, "--no-progress", check=True)
    rows = read_jsonl(out / "results.jsonl")
    assert all(r["status"] == "ok" and r["usage"]["calls"] == 1 + 4 + 3 + 2 for r in rows)
    assert all("q=3" in r["stages"]["caption"] for r in rows)


def test_bad_graph_files_exit_2(tmp_path, fake_server):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[steps]]\nstage = "nonsense"\n')
    typo = tmp_path / "typo.toml"
    typo.write_text('[[steps]]\nstage = "caption"\nn = 2\njudge = "captoin"\n')
    for graph in (bad, typo, tmp_path / "absent.toml", f"{tmp_path}/absent.py:fn"):
        proc = stagewise("generate", _items(tmp_path), "--out", tmp_path / "x", "--graph", graph, "--model",
                         "hosted_vllm/fake", "--api-base", fake_server.api_base)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert graph != typo or "captoin" in proc.stderr


def test_a_judge_named_in_any_case_is_that_judge(tmp_path, fake_server):
    toml = tmp_path / "cased.toml"
    toml.write_text('name = "cased"\n[[steps]]\nstage = "summary"\n[[steps]]\nstage = "caption"\n'
                    '[[steps]]\nstage = "reasoning"\nn = 2\njudge = "Reasoning"\n[[steps]]\nstage = "conclusion"\n')
    out = tmp_path / "run"
    stagewise("generate", _items(tmp_path), "--out", out, "--graph", toml, "--model", "hosted_vllm/fake",
              "--api-base", fake_server.api_base, "--no-progress", check=True)
    calls = Counter(t["role"] for t in read_jsonl(out / "traces.jsonl") if t["event"] == "llm.call")
    assert calls == Counter({"generate": 4 * 5, "check": 4 * 2, "judge": 4})  # the reasoning judge's pre-checks


def test_compare_writes_the_three_reports(tmp_path, fake_server):
    out = tmp_path / "cmp"
    proc = stagewise("compare", _items(tmp_path), "--out", out, "--graphs", "chain,best_of_n,stage_beam",
                     "--n", "2", "--mode", "full", "--model", "hosted_vllm/fake", "--api-base",
                     fake_server.api_base, "--no-progress", env={"STAGEWISE_PRICE_PER_MTOK": "1,2"}, check=True)
    report = json.loads((out / "report.json").read_text())
    stats = {g["graph"]: g for g in report["graphs"]}
    assert set(stats) == {"chain", "best_of_n", "stage_beam"}
    assert stats["chain"]["calls_per_item"] == 1 and stats["chain"]["cache_hits_per_item"] == 0
    # chain's request is best_of_n's sample 0 (same messages and seed): the shared cache answers it and
    # only sample 1 is asked, alone with seed + 1, which the scripted server answers as it answered chain
    # (a lone sample has quality 0), so the two candidates are one text and cost no judge call
    assert stats["best_of_n"]["calls_per_item"] == 2 and stats["best_of_n"]["cache_hits_per_item"] == 1
    asked = [(t["cache"], t["n"], t["sample"]) for t in read_jsonl(out / "best_of_n" / "traces.jsonl")
             if t["event"] == "llm.call"]
    assert sorted(set(asked)) == [("hit", 2, 0), ("miss", 2, 1)], "events say the graph's request, n = 2"
    assert stats["stage_beam"]["calls_per_item"] == 4 * 2 + 4 * 1 + 2
    assert all(s["accuracy"] == 1.0 and s["items"] == 4 and s["cost_per_item_usd"] > 0 for s in stats.values())
    assert stats["chain"]["judge_fallback_rate"] is None and stats["stage_beam"]["judge_fallback_rate"] == 0
    assert (out / "cache.sqlite").exists() and not list(out.glob("*/cache.sqlite"))  # one shared cache
    md = (out / "report.md").read_text()
    assert "| chain |" in md and "| stage_beam |" in md and "| stage_beam |" in proc.stdout
    with Image.open(out / "report.png") as png:
        assert png.size[0] > 0
    for g in stats:
        assert len(read_jsonl(out / g / "results.jsonl")) == 4


def test_a_python_graph_that_returns_no_text_is_an_error_row(tmp_path, fake_server):
    """It was an ok row with an empty answer: a graph that forgot `return text` looked like a model
    that said nothing."""
    (tmp_path / "g.py").write_text("async def silent(ops, settings):\n    await ops.generate('', 'full', 1)\n")
    out = tmp_path / "run"
    proc = stagewise("generate", _items(tmp_path), "--out", out, "--graph", f"{tmp_path}/g.py:silent", "--model",
                     "hosted_vllm/fake", "--api-base", fake_server.api_base, "--no-progress")
    rows = read_jsonl(out / "results.jsonl")
    assert proc.returncode == 3 and rows and all(r["status"] == "error" for r in rows)
    assert all("graph silent returned NoneType, not the answer's text" in r["error"] for r in rows)
