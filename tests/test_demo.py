"""`stagewise demo`: its wiring (light), and the whole run end to end on two items with the shipped
model in-process (needs torch + transformers)."""
import argparse
import json
import subprocess
import sys

import pytest

from judges.scorers import score
from stagewise import demo


def _parser():
    parser = argparse.ArgumentParser(prog="stagewise")
    demo.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_register_adds_demo_with_defaults():
    args = _parser().parse_args(["demo"])
    assert args.func is demo.cmd_demo
    assert (args.items, args.n, args.seed, args.graphs) == (demo.DEFAULT_ITEMS, demo.DEFAULT_N, demo.DEFAULT_SEED,
                                                            "chain,best_of_n,stage_beam,vote")


def test_importing_demo_loads_nothing_heavy():
    code = ("import sys, stagewise.demo; heavy = [m for m in ('torch', 'transformers', 'litellm', 'PIL') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_model_is_a_usage_error(tmp_path, capsys):
    args = _parser().parse_args(["demo", "--out", str(tmp_path / "o"), "--model", str(tmp_path / "none")])
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    assert args.func(args) == 2
    assert "no model in" in capsys.readouterr().err


def test_the_judge_is_the_model_folders_judge_where_it_has_one(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    assert demo.judge_beside(tmp_path / "m") is None  # the model judges its own candidates
    (tmp_path / "m" / "judge").mkdir()
    assert demo.judge_beside(tmp_path / "m") is None  # an empty folder is no model
    (tmp_path / "m" / "judge" / "config.json").write_text("{}")
    assert demo.judge_beside(tmp_path / "m") == tmp_path / "m" / "judge"
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    args = _parser().parse_args(["demo", "--out", str(tmp_path / "o"), "--judge-model", str(tmp_path / "none")])
    assert args.func(args) == 2
    assert f"no model in {tmp_path / 'none'}" in capsys.readouterr().err


def test_demo_end_to_end_on_two_items(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if not (demo.MODEL_DIR / "config.json").is_file():
        pytest.skip("no shipped model in stagewise/model/")
    out = tmp_path / "demo"
    # very hot candidates (so they differ), greedy judges: at the default 0.6 the shipped model's candidates
    # are nearly always one text, and identical candidates are not judged
    args = _parser().parse_args(["demo", "--out", str(out), "--items", "2", "--n", "4", "--seed", "5",
                                 "--temperature", "3", "--top-p", "1", "--judge-temperature", "0",
                                 "--no-progress"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    items = {i["id"]: i for i in map(json.loads, (out / "ITEMS.jsonl").read_text().splitlines())}
    judged = 0
    for graph in ("chain", "best_of_n", "stage_beam", "vote"):
        rows = [json.loads(line) for line in (out / graph / "results.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all(r["status"] == "ok" for r in rows), rows
        for r in rows:  # `correct` scores the answer against chartbench's (this hot, one may not conclude)
            item = items[r["id"]]
            assert r["reference"] == item["answer"], r
            concluded = r["answer"] is not None
            assert r["correct"] is (concluded and score(r["answer"], item["answer"], item.get("choices"))), r
        assert f"| {graph} |" in printed
        events = [json.loads(line) for line in (out / graph / "traces.jsonl").read_text().splitlines()]
        calls = [e for e in events if e.get("event") == "llm.call"]
        assert calls and all(e["model"].startswith("hf:") for e in calls)
        judge = demo.judge_beside(demo.MODEL_DIR)  # the shipped judge where there is one, else the model
        assert {e["model"] for e in calls if e["role"] != "generate"} <= {f"hf:{judge or demo.MODEL_DIR}"}
        if graph in ("best_of_n", "stage_beam"):  # the judge judged the candidates, greedily
            verdicts = [e for e in events if e.get("event") == "judge.verdict"]
            assert verdicts and all(e["temperature"] == 0 for e in calls if e["role"] != "generate")
            judged += sum(v["parse"] != "same" for v in verdicts)
            assert {e["temperature"] for e in calls if e["role"] == "generate"} == {3.0}
    assert judged  # some candidates differed, and the model judged them
    assert (out / "report.md").is_file() and (out / "ITEMS.jsonl").is_file()
    assert "question type" in printed and "report:" in printed and "judge picks 2nd" in printed


def test_the_shipped_model_beats_chance_on_a_fixed_benchmark(tmp_path):
    """Chain on 24 fixed questions (seed 2026, the demo's): 15 right when recorded, chance ≈ 7. At
    least 12 catches a model that no longer sees the chart, reads its prompt or is scored wrongly."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if not (demo.MODEL_DIR / "config.json").is_file():
        pytest.skip("no shipped model in stagewise/model/")
    from chartbench.score import score_run

    out = tmp_path / "demo"
    args = _parser().parse_args(["demo", "--out", str(out), "--items", "24", "--seed", "2026", "--graphs", "chain",
                                 "--no-progress"])
    assert args.func(args) == 0
    rows = [json.loads(line) for line in (out / "chain" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and all(r["status"] == "ok" for r in rows)
    scores = score_run(out / "chain" / "results.jsonl", out / "ITEMS.jsonl")
    overall = scores.pop("all")
    assert overall["correct"] == sum(r["correct"] for r in rows) >= 12, overall
    assert overall["correct"] > 1.5 * overall["n"] * overall["chance"], overall
    assert sum(t["n"] for t in scores.values()) == 24, "every question has one type"
    assert sum(t["correct"] for t in scores.values()) == overall["correct"]


def test_an_out_folder_of_other_items_is_refused(tmp_path):
    from chartbench.bench import write_items

    write_items(tmp_path / "d", 3, seed=1)
    demo.check_out(tmp_path / "d", 3, 1)  # the same items: a rerun resumes
    with pytest.raises(demo.OutInUse):
        demo.check_out(tmp_path / "d", 3, 2)
    with pytest.raises(demo.OutInUse):
        demo.check_out(tmp_path / "d", 4, 1)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    with pytest.raises(demo.OutInUse):
        demo.check_out(tmp_path / "other", 3, 1)
    demo.check_out(tmp_path / "new", 3, 1)
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(demo.OutInUse):
        demo.check_out(tmp_path / "afile", 3, 1)


def test_an_unknown_or_repeated_graph_is_bad_usage_before_anything_is_written(tmp_path):
    for graphs in ("chain,nope", "chain,chain"):
        proc = subprocess.run([sys.executable, "-m", "stagewise", "demo", "--items", "2", "--no-progress",
                               "--out", str(tmp_path / "d"), "--graphs", graphs], capture_output=True, text=True)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not (tmp_path / "d").exists()


def test_threads_default_leaves_the_event_loop_a_core_and_sizes_torch_once(tmp_path):
    cores = demo.available_cores()
    assert _parser().parse_args(["demo"]).threads == max(1, cores - 1) < cores + (cores == 1)
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if not (demo.MODEL_DIR / "config.json").is_file():
        pytest.skip("no shipped model in stagewise/model/")
    code = ("import sys, torch; from pathlib import Path; from stagewise import demo; "
            "demo.run_demo(Path(sys.argv[1]), items=1, n=1, graphs='chain', threads=1, progress=False); "
            "print(torch.get_num_threads(), torch.get_num_interop_threads())")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")], capture_output=True, text=True,
                         check=True, timeout=300).stdout.split()
    assert out == ["1", "1"], out  # on a 2-core machine torch's own default is 2 of each
    rows = [json.loads(line) for line in (tmp_path / "d" / "chain" / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok"]
