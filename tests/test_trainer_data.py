"""trainer/ without torch: reading results and LLaVA-CoT files, export, and the CLI's usage errors."""
import argparse
import io
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from trainer import cli, data, synth
from trainer.export import export

OK = synth.response(["red", "green", "blue"], "green")


def _row(i, **kw):
    row = {"id": f"r{i}", "status": "ok", "error": None, "question": "Which colour bar is the tallest?",
           "image": "img/0.png", "response": OK, "answer": "green", "reference": "green", "correct": True}
    row.update(kw)
    return row


def truncated_jpeg(path):
    """Passes the load-time check (header + verify) but fails to decode: found only in training."""
    im = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: int(len(buf.getvalue()) * 0.9)])


@pytest.fixture
def mixed_run(tmp_path):
    """A run DIR with 4 good synthetic rows and one row for each reason to drop."""
    run = tmp_path / "run"
    synth.write_run(run, n=4)
    (run / "img" / "text.png").write_text("not an image")
    good = (run / "results.jsonl").read_text().splitlines()
    bad = [
        json.dumps(_row(10, status="error", error="timeout", response=None)),
        json.dumps(_row(11, response=OK.replace("</CAPTION>", ""))),
        json.dumps(_row(12, correct=False)),
        json.dumps(_row(13, correct=None)),
        json.dumps(_row(14, image="img/nope.png")),
        json.dumps(_row(15, image="img/text.png")),
        json.dumps(_row(16, image="https://example.com/a.png")),
        json.dumps(_row(17, image=None)),
        "{not json",
        json.dumps(_row(0, id="bars-0")),  # duplicate id
        # kept: no reference (nothing to check), and stages without a response
        json.dumps(_row(20, reference=None, correct=None)),
        json.dumps(_row(21, response=None, stages={"summary": "<SUMMARY> s </SUMMARY>", "caption": "c</CAPTION>",
                                                   "reasoning": "r", "conclusion": "green"})),
    ]
    (run / "results.jsonl").write_text("\n".join(good + bad) + "\n")
    return run


def test_results_keep_good_rows_and_count_each_drop(mixed_run):
    examples, counts, fmt = data.load(mixed_run)
    assert fmt == "results"
    assert [e.id for e in examples] == ["bars-0", "bars-1", "bars-2", "bars-3", "r20", "r21"]
    assert counts.as_dict() == {"rows": 16, "kept": 6, "dropped": {
        "bad_json": 1, "duplicate_id": 1, "incomplete_tags": 1, "incorrect": 1, "missing_image": 1,
        "no_image": 1, "remote_image": 1, "status_not_ok": 1, "unreadable_image": 1, "unscored": 1}}
    assert all(os.path.isabs(e.image) and os.path.exists(e.image) for e in examples)
    assert examples[-1].turns[0][1] == ("<SUMMARY> s </SUMMARY>\n\n<CAPTION> c </CAPTION>\n\n"
                                        "<REASONING> r </REASONING>\n\n<CONCLUSION> green </CONCLUSION>")


def test_cot_text_trims_and_requires_all_four_tags_in_order():
    assert data.cot_text({"response": "preamble " + OK + " trailing"}) == OK
    assert data.cot_text({"response": OK.replace("<CAPTION>", "<CAPTIO>")}) is None
    assert data.cot_text({"response": OK.replace("green </CONCLUSION>", " </CONCLUSION>")}) is None
    swapped = "<CAPTION> c </CAPTION><SUMMARY> s </SUMMARY><REASONING> r </REASONING><CONCLUSION> x </CONCLUSION>"
    assert data.cot_text({"response": swapped}) is None


def test_user_text_is_the_question_the_model_saw():
    from stages.agent import question_text

    for q, choices in [("Q?", ["x", "y"]), ("Which? ", ["down", "up", "flat"]), ("Plain?", None), ("Q", [])]:
        assert data.user_text({"question": q, "choices": choices}) == question_text(q, choices)
    assert data.user_text({"question": "Q?", "choices": ["x", "y"]}) == "Q?\nOptions:\nA. x\nB. y"


def test_results_row_choices_reach_training_and_export(tmp_path):
    run = tmp_path / "run"
    synth.write_run(run, n=1)
    row = json.loads((run / "results.jsonl").read_text())
    row["choices"] = ["red", "green"]
    (run / "results.jsonl").write_text(json.dumps(row) + "\n")
    want = row["question"] + "\nOptions:\nA. red\nB. green"
    assert data.load(run)[0][0].turns[0][0] == want
    export(run, tmp_path / "cot.jsonl")
    assert json.loads((tmp_path / "cot.jsonl").read_text())["conversations"][0]["value"] == want


def test_a_multiple_choice_run_trains_on_the_options_the_model_saw(tmp_path, fake_server):
    from conftest import stagewise, write_items
    from stages.agent import question_text

    Image.new("RGB", (20, 20), "red").save(tmp_path / "chart.png")
    items = write_items(tmp_path / "items.jsonl", [{"id": "mc", "question": "Which is tallest?", "image": "chart.png",
                                                    "choices": ["red", "green"], "answer": "A"}])
    run = tmp_path / "run"
    stagewise("generate", items, "--out", run, "--graph", "chain", "--model", "hosted_vllm/fake", "--api-base",
              fake_server.api_base, "--no-progress", check=True)
    row = json.loads((run / "results.jsonl").read_text())
    assert row["choices"] == ["red", "green"] and row["correct"]
    [example], _, _ = data.load(run)
    assert example.turns[0][0] == question_text("Which is tallest?", ["red", "green"])


def test_a_line_separator_inside_a_row_is_no_line_end_and_bad_bytes_cost_one_row(tmp_path):
    Image.new("RGB", (20, 20), "red").save(tmp_path / "img.png")
    good = json.dumps(_row(0, question="one\u2028two", image="img.png"), ensure_ascii=False).encode()
    (tmp_path / "results.jsonl").write_bytes(good + b"\n" + b'{"id": "r1", "question": "caf\xe9"}\n')
    examples, counts, _ = data.load(tmp_path)
    assert [e.turns[0][0] for e in examples] == ["one\u2028two"] and counts.rows == 2 and counts.kept == 1


def test_llava_cot_reader(tmp_path):
    Image.new("RGB", (20, 20), "blue").save(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (20, 20), "red").save(tmp_path / "sub" / "b.jpg")
    rows = [
        {"id": "1", "image": "a.png", "conversations": [
            {"from": "human", "value": "<image>\nFirst?"}, {"from": "gpt", "value": OK},
            {"from": "human", "value": "Second?"}, {"from": "gpt", "value": "<SUMMARY>2</SUMMARY>"}]},
        {"id": "2", "image": "sub/b.jpg", "conversations": [
            {"from": "human", "value": "Q <image>"}, {"from": "gpt", "value": "A"}]},
        {"id": "3", "image": "missing.jpg", "conversations": [
            {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
        {"id": "4", "image": "a.png", "conversations": [{"from": "gpt", "value": "A"}]},
    ]
    f = tmp_path / "train.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, counts, fmt = data.load(f)
    assert fmt == "llava-cot"
    assert counts.as_dict() == {"rows": 4, "kept": 2, "dropped": {"bad_conversations": 1, "missing_image": 1}}
    assert examples[0].turns == [("First?", OK), ("Second?", "<SUMMARY>2</SUMMARY>")]
    assert examples[1].turns == [("Q", "A")]
    # a JSON array with another image root
    g = tmp_path / "sub" / "train.json"
    g.write_text(json.dumps(rows[:2]))
    examples, counts, _ = data.load(g, image_root=tmp_path)
    assert [e.id for e in examples] == ["1", "2"] and counts.kept == 2


def test_detect_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.detect(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError):
        data.detect(tmp_path)  # a folder without results.jsonl
    (tmp_path / "x.jsonl").write_text('{"foo": 1}\n')
    with pytest.raises(ValueError):
        data.detect(tmp_path / "x.jsonl")


def test_export_round_trip(mixed_run, tmp_path):
    out = tmp_path / "elsewhere" / "cot.jsonl"
    counts = export(mixed_run, out)
    theirs, their_counts, fmt = data.load(out)
    ours, our_counts, _ = data.load(mixed_run)
    assert fmt == "llava-cot" and counts.as_dict() == our_counts.as_dict()
    assert their_counts.as_dict() == {"rows": 6, "kept": 6, "dropped": {}}
    assert [(e.id, e.image, e.turns) for e in theirs] == [(e.id, e.image, e.turns) for e in ours]
    row = json.loads(out.read_text().splitlines()[0])
    assert set(row) == {"id", "image", "conversations"} and not os.path.isabs(row["image"])
    assert [c["from"] for c in row["conversations"]] == ["human", "gpt"]


def test_bad_image_found_late_is_none(tmp_path):
    truncated_jpeg(tmp_path / "t.jpg")
    assert data.check_image(str(tmp_path / "t.jpg"))
    ds = data.Dialogs([data.Example("t", str(tmp_path / "t.jpg"), [("q", "a")])])
    assert ds[0] is None


# --- CLI ---------------------------------------------------------------------------------------

def run_cli(argv):
    parser = argparse.ArgumentParser(prog="stagewise")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_imports_nothing_heavy_and_usage_errors_exit_2(tmp_path):
    code = (
        "import sys, argparse, trainer.cli as c\n"
        "p = argparse.ArgumentParser(); c.register(p.add_subparsers(dest='cmd'))\n"
        f"a = p.parse_args(['train', {str(tmp_path / 'nope')!r}, '--base', '.', '--out', 'o'])\n"
        "rc = a.func(a)\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'accelerate') if m in sys.modules]\n"
        "print(rc, heavy)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert r.stdout.strip() == "2 []", r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("stagewise train: error:")


@pytest.mark.parametrize("argv, msg", [
    (["tiny-model", "x", "--arch", "gpt2"], "--arch must be one of"),
    (["export", "nowhere", "--format", "llava-cot"], "no results.jsonl"),
    (["export", ".", "--format", "sharegpt"], "--format must be one of"),
])
def test_cli_bad_usage(argv, msg, capsys):
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


def test_cli_train_checks_usage_before_loading(tmp_path, capsys):
    synth.write_run(tmp_path / "run", n=2)
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    common = [str(tmp_path / "run"), "--base", str(tmp_path / "base"), "--out", str(tmp_path / "o")]
    for extra, msg in [(["--merge"], "--merge needs --lora"), (["--max-steps", "0"], "--max-steps"),
                       (["--resume", str(tmp_path)], "not a checkpoint"),
                       (["--max-minutes", "0"], "--max-minutes must be positive"),
                       (["--lr-decay", "1.5"], "--lr-decay must be in (0, 1]")]:
        assert run_cli(["train", *common, *extra]) == 2
        assert msg in capsys.readouterr().err
    assert run_cli(["train", str(tmp_path / "run"), "--base", str(tmp_path), "--out", "o"]) == 2
    assert "not a model folder" in capsys.readouterr().err


def test_cli_export(mixed_run, capsys):
    assert run_cli(["export", str(mixed_run), "--format", "llava-cot"]) == 0
    assert "exported 6 of 16 rows" in capsys.readouterr().out
    assert len((mixed_run / "llava-cot.jsonl").read_text().splitlines()) == 6


def test_cli_export_to_a_folder_is_a_usage_error(mixed_run, tmp_path, capsys):
    out = tmp_path / "outdir"
    out.mkdir()
    assert run_cli(["export", str(mixed_run), "--format", "llava-cot", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and str(out) in err and len(err.strip().splitlines()) == 1
    assert list(out.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["outdir", "run"]
    (tmp_path / "afile").write_text("")
    under_a_file = str(tmp_path / "afile" / "x.jsonl")
    assert run_cli(["export", str(mixed_run), "--format", "llava-cot", "--out", under_a_file]) == 2
    err = capsys.readouterr().err
    assert "afile" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "outdir", "run"]


def test_llava_cot_speaker_not_a_string_drops_the_row(tmp_path):
    Image.new("RGB", (20, 20), "blue").save(tmp_path / "a.png")
    good = {"id": "ok", "image": "a.png",
            "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}
    rows = [good,
            dict(good, id="list", conversations=[{"from": ["human"], "value": "Q"}, {"from": "gpt", "value": "A"}]),
            dict(good, id="dict", conversations=[{"from": "human", "value": "Q"}, {"role": {"x": 1}, "value": "A"}])]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, counts, _ = data.load(tmp_path / "t.jsonl")
    assert [e.id for e in examples] == ["ok"]
    assert counts.as_dict() == {"rows": 3, "kept": 1, "dropped": {"bad_conversations": 2}}


def test_llava_cot_images_under_image_root_then_beside_the_file_then_cwd(tmp_path, monkeypatch):
    """The README's order, for LLaVA-CoT as for results: --image-root, the data file's folder, the cwd."""
    (tmp_path / "data").mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "cwd").mkdir()
    Image.new("RGB", (20, 20), "blue").save(tmp_path / "data" / "beside.png")
    Image.new("RGB", (20, 20), "red").save(tmp_path / "cwd" / "here.png")
    convs = [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]
    f = tmp_path / "data" / "t.jsonl"
    f.write_text("".join(json.dumps({"id": i, "image": i + ".png", "conversations": convs}) + "\n"
                         for i in ("beside", "here", "nowhere")))
    monkeypatch.chdir(tmp_path / "cwd")
    examples, counts, _ = data.load(f, image_root=tmp_path / "root")
    assert [(e.id, e.image) for e in examples] == [("beside", str(tmp_path / "data" / "beside.png")),
                                                   ("here", str(tmp_path / "cwd" / "here.png"))]
    assert counts.dropped == {"missing_image": 1}
