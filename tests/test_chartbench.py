"""chartbench without torch: seeded items, exact answers (checked against the pixels too), teacher
traces that parse and score, judge and pre-check examples in the reference's format, the train file."""
import json
import random
import re
from pathlib import Path

import pytest
from PIL import Image

from chartbench import charts, corrupt, judging, questions, teacher, trainset
from chartbench.bench import from_row, make_item, make_items, read_items, write_items
from chartbench.charts import Chart
from chartbench.questions import Question
from chartbench.score import score_run, table
from judges.pairwise import render_check, render_judge
from judges.scorers import score
from judges.verdict import check_failed, check_failed_faithful, extract_reason, parse_verdict, parse_verdict_faithful
from stages.agent import question_text
from stages.tags import parse_stages
from trainer import data as trainer_data

ITEMS = make_items(300, seed=11)


def test_items_are_deterministic_and_prefix_stable(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_items(a, 12, seed=3)
    write_items(b, 12, seed=3)
    write_items(c, 12, seed=4)
    assert (a / "ITEMS.jsonl").read_bytes() == (b / "ITEMS.jsonl").read_bytes()
    assert (a / "ITEMS.jsonl").read_bytes() != (c / "ITEMS.jsonl").read_bytes()
    for row in map(json.loads, (a / "ITEMS.jsonl").read_text().splitlines()):
        assert (a / row["image"]).read_bytes() == (b / row["image"]).read_bytes()
        assert set(row) >= {"id", "question", "image", "answer", "type", "chart"}
        assert ("choices" in row) == (row["type"] in ("bar_choice", "line_trend"))
    assert [i.id for i in make_items(5, 3)] == [i.id for i in make_items(12, 3)[:5]]
    assert [i.id for i in read_items(a / "ITEMS.jsonl")] == [i.id for i in make_items(12, 3)]


def test_every_question_type_appears_and_ids_are_unique():
    assert {i.question.qtype for i in ITEMS} == set(questions.TYPES)
    assert len({i.id for i in ITEMS}) == len(ITEMS)


def _oracle(item) -> str:
    """The answer worked out independently of questions.ask."""
    c, v, q = item.chart.colours, item.chart.values, item.question
    t, p = q.qtype, q.params
    hi, lo = v.index(max(v)), v.index(min(v))
    if t == "bar_tallest":
        return c[hi]
    if t == "bar_shortest":
        return c[lo]
    if t in ("bar_value", "line_value"):
        return str(v[p["i"]])
    if t == "bar_difference":
        return str(abs(v[p["i"]] - v[p["j"]]))
    if t in ("bar_count", "line_count"):
        return str(len(v))
    if t == "bar_choice":
        return "ABCD"[q.choices.index(c[hi] if p["most"] == "tallest" else c[lo])]
    if t == "line_peak":
        return str(hi + 1)
    if t == "line_range":
        return str(max(v) - min(v))
    assert t == "line_trend"
    return "ABCD"[q.choices.index("up" if v[p["i"] + 1] > v[p["i"]] else "down")]


def test_answers_are_exact():
    for item in ITEMS:
        assert item.question.answer == _oracle(item), item.id
        assert 0 < item.chance <= 0.5


def _read_values_from_pixels(im: Image.Image, chart: charts.Chart) -> list[int]:
    """Values measured on the PNG: a bar's top edge, or a point's marker centre, per column."""
    s = im.width // charts.CANVAS
    px = im.load()
    out = []
    for j in range(chart.n):
        x = (j * charts.COLUMN + charts.COLUMN // 2) * s
        colour = charts.PALETTE[chart.colours[j] if chart.kind == "bar" else chart.line_colour]
        ys = [y for y in range(im.height) if px[x, y] == colour]
        if chart.kind == "bar":
            out.append(round((charts.CANVAS - ys[0] / s) / charts.UNIT))
        else:  # the marker is centred half a step above the value's grid line
            centre = (ys[0] + ys[-1]) / 2 / s
            out.append(round((charts.CANVAS - centre + charts.UNIT / 2) / charts.UNIT))
    return out


def test_pictures_show_the_data(tmp_path):
    for item in ITEMS[:40]:
        im = charts.render(item.chart)
        assert im.size == (charts.CANVAS * charts.SCALE,) * 2
        assert _read_values_from_pixels(im, item.chart) == list(item.chart.values), item.id


def test_teacher_traces_have_four_stages_and_score_correct():
    for item in ITEMS:
        stages = teacher.trace(item.chart, item.question)
        text = teacher.format_trace(stages)
        parsed = parse_stages(text)
        assert parsed.complete and not parsed.repairs, item.id
        assert parsed.stages == stages
        q = item.question
        assert score(parsed.stages["conclusion"], q.answer, list(q.choices) if q.choices else None), item.id
        assert trainer_data.cot_text({"response": text}) == text  # the trainer keeps it whole
        for v in item.chart.values:  # the caption transcribes every value
            assert str(v) in stages["caption"]


def test_bars_asked_by_colour_are_found_by_walking_the_bars_in_order():
    chart = Chart("bar", ("blue", "red", "green", "orange"), (7, 4, 2, 5))
    value = Question("bar_value", "What is the value of the green bar?", "2", params={"i": 2})
    assert teacher.solve(chart, value).reasoning == ("Bar 1 is blue, no. Bar 2 is red, no. Bar 3 is green, yes, at 2. "
                                                      "So the green bar reaches 2.")
    # the slip is the small model's own: a neighbour taken for the asked bar, here the next one
    assert teacher.solve(chart, value, slip=True).answer == "5"
    last = Question("bar_value", "What is the value of the orange bar?", "5", params={"i": 3})
    slipped = teacher.solve(chart, last, slip=True).reasoning
    assert slipped.endswith("Bar 3 is green, yes, at 2. So the orange bar reaches 2.")  # the last bar: the one before
    diff = Question("bar_difference", "How much taller is the orange bar than the red bar?", "1",
                    params={"i": 3, "j": 1})
    s = teacher.solve(chart, diff)
    assert s.reasoning == ("Bar 1 is blue, no. Bar 2 is red, yes, at 4. Bar 3 is green, no. "
                           "Bar 4 is orange, yes, at 5. So the difference is 5 - 4 = 1.") and s.answer == "1"
    assert s.key.endswith("at 5, so 5 - 4 = 1")  # a judge's reason walks the bars too, never a lookup by colour


def test_wrong_stages_differ_and_wrong_answers_score_wrong():
    rng = random.Random(0)
    for item in ITEMS:
        chart, q = item.chart, item.question
        good = teacher.trace(chart, q)
        choices = list(q.choices) if q.choices else None
        assert corrupt.wrong_caption(chart, rng)[0] != good["caption"]
        assert corrupt.wrong_summary(chart, q, rng) != good["summary"]
        assert corrupt.wrong_solution(chart, q, rng).reasoning != good["reasoning"]
        assert not score(corrupt.wrong_conclusion(chart, q, rng), q.answer, choices)
        bad = corrupt.corrupt_answer(chart, q, rng)
        assert teacher.format_trace(bad) != teacher.format_trace(good)


@pytest.mark.parametrize("kind", judging.JUDGE_KINDS)
def test_judge_examples_are_the_engines_prompts_with_a_reference_verdict(kind):
    rng = random.Random(kind)
    sides = set()
    for item in ITEMS[:60]:
        ex = judging.judge_example(item, kind, rng)
        q = item.question
        qt = question_text(q.text, list(q.choices) if q.choices else None)
        assert ex.image and ex.kind == kind and ex.better in (1, 2)
        sides.add(ex.better)
        assert ex.prompt.startswith(render_judge(kind, qt, "R1", "R2").split("\nRepsonse 1:")[0].split("\n\nHint")[0])
        assert f"Question: {qt}" in ex.prompt and "Repsonse 1: " in ex.prompt and "Repsonse 2: " in ex.prompt
        right = teacher.format_trace(teacher.trace(item.chart, q)) if kind == "answer" else \
            teacher.trace(item.chart, q)[kind]
        assert f"Repsonse {ex.better}: {right}\n" in ex.prompt
        if kind in ("reasoning", "conclusion"):
            assert "Hint about the Question: " + teacher.caption(item.chart) in ex.prompt
        if kind == "answer":  # the decisive step written out before the answer, never one leap to it
            assert f"; {teacher.solve(item.chart, q).key}, so the answer is {q.answer}; response 1 says " in ex.target
        if kind in ("answer", "conclusion", "reasoning"):  # each response's result checked, "yes" on the better one's
            checks = re.findall(r"response (\d) says (\S+), (yes|no)", ex.target)
            assert [n for n, _, _ in checks] == ["1", "2"] and checks[ex.better - 1][2] == "yes"
            other = checks[2 - ex.better]  # "no", unless the wrong answer concludes the same (no draw differed)
            assert other[2] == ("yes" if other[1] == checks[ex.better - 1][1] else "no")
        # the target is "Since [reason], I choose response [1/2]." and both parsers read it right
        assert ex.target.startswith("Since ") and ex.target.endswith(f", I choose response {ex.better}.")
        assert parse_verdict(ex.target) == ex.better - 1
        assert parse_verdict_faithful(ex.target) == ex.better - 1
        assert extract_reason(ex.target)
    assert sides == {1, 2}


def test_the_judges_check_agrees_with_the_scorer():
    """A conclusion the benchmark marks right gets "yes" however it is written ("7.0" for 7, "C." for C)."""
    numeric = next(i for i in ITEMS if not i.question.choices and i.question.answer.isdigit())
    lettered = next(i for i in ITEMS if i.question.choices)
    for item, said in ((numeric, numeric.question.answer + ".0"), (lettered, lettered.question.answer + ".")):
        q = item.question
        assert score(said, q.answer, list(q.choices) if q.choices else None)
        for ex in judging.pair_examples(item, "conclusion", said, "nothing", hint=None):
            checks = re.findall(r"response (\d) says (\S+), (yes|no)", ex.target)
            assert checks[ex.better - 1] == (str(ex.better), said, "yes") and checks[2 - ex.better][2] == "no"


def test_what_a_reasoning_works_out_is_read_in_the_answers_form():
    """The reasoning judge checks the answer each reasoning arrives at: the teacher's always scores right,
    a corrupted one never, whatever the question type."""
    rng = random.Random(3)
    for item in ITEMS:
        q = item.question
        choices = list(q.choices) if q.choices else None
        assert score(judging.worked_out(teacher.trace(item.chart, q)["reasoning"], q), q.answer, choices), item.id
        assert not score(judging.worked_out(corrupt.wrong_solution(item.chart, q, rng).reasoning, q), q.answer,
                         choices), item.id
    lettered = next(i for i in ITEMS if i.question.choices)
    assert judging.worked_out("Green is option B. </REASONING> A", lettered.question) == "B"
    assert judging.worked_out("Bar 1 is red, yQuestion: How", lettered.question) == "nothing"


def test_check_examples_are_text_only_and_read_back():
    rng = random.Random(1)
    for item in ITEMS[:80]:
        for wrong in (False, True):
            ex = judging.check_example(item, rng, wrong=wrong)
            assert not ex.image and ex.kind == "check"
            assert ex.target == ("incorrect" if wrong else "correct")
            assert check_failed(ex.target) is wrong and check_failed_faithful(ex.target) is wrong
            caption = teacher.caption(item.chart)
            assert ex.prompt.startswith(render_check(caption, "X").split("Reasoning Process:")[0])


def test_trainset_reads_back_in_the_trainer(tmp_path):
    path, counts = trainset.write_trainset(tmp_path, 40, seed=5, mix=trainset.Mix(judges=1.0, checks=0.5))
    # every judge pair is written in both orders: two rows, the better one first in one of them
    assert counts["trace"] == 40 and sum(counts[k] for k in judging.JUDGE_KINDS) == 80 and counts["check"] > 0
    examples, got, fmt = trainer_data.load(path)
    assert fmt == "llava-cot" and got.kept == sum(counts.values()) and not got.dropped
    by_kind = {}
    for ex in examples:
        by_kind.setdefault(ex.id.rsplit("-", 1)[1], []).append(ex)
    assert all(ex.image is None for ex in by_kind["check"])
    assert all(ex.image and ex.image.endswith(".png") for k, exs in by_kind.items() if k != "check" for ex in exs)
    trace = by_kind["trace"][0]
    item = make_item(5, 0, split="train")
    assert trace.turns == [(trainset.full_prompt(item), teacher.format_trace(teacher.trace(item.chart, item.question)))]
    # the prompt is what the engine sends in --mode full
    assert trace.turns[0][0].endswith("Question: " + item.question.text) or "Options:" in trace.turns[0][0]


def test_a_mix_weighs_sources_drops_kinds_and_reads_back_from_anywhere(tmp_path, monkeypatch):
    from chartbench.__main__ import main

    a, b = tmp_path / "a", tmp_path / "b"
    _, ca = trainset.write_trainset(a, 6, seed=5, mix=trainset.Mix(judges=1.0, checks=1.0))
    _, cb = trainset.write_trainset(b, 4, seed=6, mix=trainset.Mix(judges=1.0, checks=0.0))
    monkeypatch.chdir(tmp_path / "a")  # relative sources: images must still resolve beside their own file
    assert main(["mix", str(tmp_path / "out" / "mix.jsonl"), "train.jsonl", f"{b / 'train.jsonl'}:3",
                 "--drop", "trace"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "mix.jsonl").read_text().splitlines()]
    kinds = [r["id"].rsplit("-", 1)[1] for r in rows]
    judge_rows = lambda c: sum(c[k] for k in judging.JUDGE_KINDS)  # noqa: E731
    assert "trace" not in kinds and kinds.count("check") == ca["check"]
    assert len(rows) == judge_rows(ca) + ca["check"] + 3 * judge_rows(cb)
    assert all(Path(r["image"]).is_absolute() and Path(r["image"]).is_file() for r in rows if "image" in r)
    examples, got, _ = trainer_data.load(tmp_path / "out" / "mix.jsonl")
    assert got.kept == len(rows) and not got.dropped
    with pytest.raises(SystemExit):  # a missing source is named, not a traceback
        main(["mix", str(tmp_path / "x.jsonl"), "nowhere.jsonl"])
    # a bad row, or OUT among the sources, leaves OUT as it was
    mix = tmp_path / "out" / "mix.jsonl"
    before = mix.read_bytes()
    (tmp_path / "bad.jsonl").write_text("garbage\n")
    for sources in (["train.jsonl", str(tmp_path / "bad.jsonl")], [str(mix), "train.jsonl"]):
        with pytest.raises(SystemExit):
            main(["mix", str(mix), *sources])
        assert mix.read_bytes() == before and not mix.with_name("mix.jsonl.tmp").exists()


def test_commands_name_a_missing_path_or_a_bad_number_in_one_line(tmp_path):
    from chartbench.__main__ import main

    items = write_items(tmp_path, 3, seed=2)
    for argv in (["score", str(tmp_path / "nodir"), str(items)], ["captions", str(tmp_path), "nofile.jsonl"],
                 ["items", str(tmp_path / "i"), "--n", "-3"], ["trainset", str(tmp_path / "t"), "--judges", "2"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, argv
    assert not (tmp_path / "i").exists() and not (tmp_path / "t").exists()
    with open(items, "a") as f:  # a line the run made an error row is no benchmark item, and no crash
        f.write("not json\n")
    assert len(read_items(items)) == 3


def test_score_per_type(tmp_path):
    path = write_items(tmp_path, 20, seed=2)
    items = read_items(path)
    rows = [{"id": it.id, "status": "ok", "correct": k % 2 == 0} for k, it in enumerate(items)]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:-1]))
    s = score_run(tmp_path / "run" / "results.jsonl", path)
    assert s["all"]["n"] == 20 and s["all"]["correct"] == 10  # the missing last row counts wrong
    assert abs(s["all"]["chance"] - sum(i.chance for i in items) / 20) < 1e-3
    assert "| all | 20 | 0.50 |" in table({"run": s})
    assert from_row(json.loads(path.read_text().splitlines()[0])) == items[0]


def test_benchmarks_and_training_sets_never_share_a_chart():
    assert all(charts.split_of(i.chart) == "test" for i in ITEMS)
    train = make_items(300, seed=11, split="train")
    assert all(charts.split_of(i.chart) == "train" for i in train)
    assert not {i.chart for i in ITEMS} & {i.chart for i in train}
    share = sum(charts.split_of(charts.random_chart(random.Random(k))) == "test" for k in range(2000)) / 2000
    assert 0.15 < share < 0.25


def test_the_models_tokenizer_splits_answers_at_stage_boundaries():
    """Continued generation restarts from the text up to a closing tag; that prefix must tokenize
    exactly as it does inside the whole answer (chartbench.base pre-splits tags, digits, colours)."""
    tokenizers = pytest.importorskip("tokenizers")
    from stagewise.demo import MODEL_DIR

    if not (MODEL_DIR / "tokenizer.json").is_file():
        pytest.skip("no shipped model in stagewise/model/")
    tok = tokenizers.Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    for item in ITEMS[:50]:
        text = teacher.format_trace(teacher.trace(item.chart, item.question))
        ids = tok.encode(text, add_special_tokens=False).ids
        for tag in ("</SUMMARY>", "</CAPTION>", "</REASONING>"):
            prefix = text[:text.index(tag) + len(tag)]
            pre = tok.encode(prefix, add_special_tokens=False).ids
            assert ids[:len(pre)] == pre, (item.id, tag)
        assert tok.decode(ids) == text
        assert len(ids) < 96  # the whole answer is short for this tokenizer (the demo caps it at 128)


def test_trainer_collates_text_only_checks_beside_image_rows(tmp_path):
    """Pre-check rows carry no image: the collator batches them with image rows, no image token in
    their text, loss on the assistant's answer only."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import AutoProcessor

    from stagewise.demo import MODEL_DIR
    from trainer.collate import IGNORE, Collator

    if not (MODEL_DIR / "config.json").is_file():
        pytest.skip("no shipped model in stagewise/model/")
    path, counts = trainset.write_trainset(tmp_path, 6, seed=2, mix=trainset.Mix(judges=0.0, checks=1.0))
    examples, _, _ = trainer_data.load(path)
    rows = trainer_data.Dialogs(examples)
    batch_items = [rows[0], next(rows[i] for i in range(len(rows)) if rows[i][0] is None)]
    proc = AutoProcessor.from_pretrained(MODEL_DIR)
    batch = Collator(proc)(batch_items)
    image_id = proc.tokenizer.convert_tokens_to_ids("<image>")
    ids, labels = batch["input_ids"], batch["labels"]
    assert (ids[0] == image_id).sum() == 16 and (ids[1] == image_id).sum() == 0
    assert batch["pixel_values"].shape[0] == 1
    for i, (_, turns) in enumerate(batch_items):
        supervised = proc.tokenizer.decode(labels[i][labels[i] != IGNORE])
        assert supervised.startswith(turns[0][1]) and supervised.endswith("<|im_end|>\n")


def test_judge_pairs_come_in_both_orders_so_position_says_nothing(tmp_path):
    rows = [json.loads(line) for line in trainset.write_trainset(
        tmp_path, 60, seed=7, mix=trainset.Mix(judges=1.0, checks=0.0))[0].read_text().splitlines()]
    judges = [r for r in rows if r["id"].rsplit("-", 1)[1] in judging.JUDGE_KINDS]
    verdicts = [r["conversations"][1]["value"][-2] for r in judges]
    assert len(judges) == 120 and verdicts.count("1") == verdicts.count("2") == 60
    for first, second in zip(judges[::2], judges[1::2]):  # the same pair, responses swapped
        assert first["image"] == second["image"] and first["conversations"][0] != second["conversations"][0]
        assert {verdicts[judges.index(first)], verdicts[judges.index(second)]} == {"1", "2"}


def test_a_trainset_does_not_depend_on_how_many_workers_wrote_it(tmp_path):
    one, _ = trainset.write_trainset(tmp_path / "one", 30, seed=3, workers=1)
    three, _ = trainset.write_trainset(tmp_path / "three", 30, seed=3, workers=3)
    assert one.read_bytes() == three.read_bytes() and not list((tmp_path / "three").glob("train.part*"))


def test_caption_scores_count_colours_and_values_per_chart(tmp_path):
    from chartbench.captions import caption_scores

    items = make_items(40, seed=9)
    bar, line = next(i for i in items if i.chart.kind == "bar"), next(i for i in items if i.chart.kind == "line")
    write_items(tmp_path, 0)  # the folder
    (tmp_path / "ITEMS.jsonl").write_text("".join(json.dumps(i.row(f"images/{i.id}.png")) + "\n" for i in (bar, line)))
    wrong = teacher.caption(bar.chart).replace(f"is {bar.chart.colours[0]} at",
                                               f"is {next(c for c in charts.PALETTE if c not in bar.chart.colours)} at")
    rows = [{"id": bar.id, "stages": {"caption": wrong}},
            {"id": line.id, "stages": {"caption": teacher.caption(line.chart)}}]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = caption_scores(tmp_path / "results.jsonl", tmp_path / "ITEMS.jsonl")
    assert s["bar"] == {"captions": 1, "colours": 0.0, "values": 1.0, "exact": 0.0,
                        "bars": round((bar.chart.n - 1) / bar.chart.n, 3)}
    assert s["line"] == {"captions": 1, "colours": 1.0, "values": 1.0, "exact": 1.0}
    assert s["all"]["colours"] == 0.5


def test_judge_bench_asks_every_kind_in_both_orders():
    pytest.importorskip("torch")
    from chartbench.judgebench import judge_bench, judge_by_type
    from stagewise.demo import MODEL_DIR

    r = judge_bench(MODEL_DIR, n=3, seed=777)
    assert set(r) == set(judging.JUDGE_KINDS) | {"check"} and r["check"]["checks"] == 6
    assert all(r[k]["pairs"] == 3 and 0 <= r[k]["accuracy"] <= 1 and 0 <= r[k]["second_rate"] <= 1
               for k in judging.JUDGE_KINDS)
    # the shipped model tells a plan for this question from one for another (1.00 on 60 pairs)
    assert r["summary"]["accuracy"] == 1.0 and r["summary"]["second_rate"] == 0.5
    per_type = judge_by_type(MODEL_DIR, "summary", n=1)
    assert set(per_type) == set(questions.TYPES) and all(row["pairs"] == 1 for row in per_type.values())


def test_lookup_bench_lets_the_model_write_the_reasoning_on_the_teacher_caption():
    pytest.importorskip("torch")
    from chartbench.lookup import LOOKUPS, _prefix, found_value, lookup_bench
    from stagewise.demo import MODEL_DIR

    for item in make_items(40, seed=5, types=tuple(LOOKUPS)):
        full = teacher.format_trace(teacher.trace(item.chart, item.question))
        cut = _prefix(full)
        assert cut.endswith("<REASONING>") and "</CAPTION>" in cut and "REASONING" not in cut[:-11]
        assert found_value(full[len(cut):]) == item.question.answer  # the teacher's reasoning ends on it
    assert found_value(" Bar 1 is red, yes, at 4. So the red bar reaches 4. </REASONING> <CONCLUSION> 7") == "4"
    assert found_value(" no number </REASONING>") == ""
    r = lookup_bench(MODEL_DIR, n=8, seed=99)
    assert set(r) == set(LOOKUPS) and all(r[t]["items"] == 8 for t in LOOKUPS)
    assert all(0 <= r[t][k] <= 1 for t in LOOKUPS for k in ("right", "chance", "follows_caption", "follows_image"))
    # the shipped model finds a point by its position every time (1.00 of 150 in TRAINING.md), so the
    # probe's prompt and cut are the ones it was trained on
    assert r["line_value"]["right"] == 1.0


def test_onpolicy_samples_the_asked_types_and_pairs_wrong_answers_with_right_ones(tmp_path):
    pytest.importorskip("torch")
    from chartbench.onpolicy import write_onpolicy
    from stagewise.demo import MODEL_DIR

    path, tally = write_onpolicy(tmp_path, MODEL_DIR, n=3, seed=5, samples=2, temperatures=(2.0,), batch=3,
                                 types=("bar_value",))
    assert tally["T2.0:answers"] == 6 and tally["answer"] >= 2  # at T 2.0 some of the six are wrong (seeded)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == \
        sorted(f"{make_item(5, i, ('bar_value',), split='train').id}.png" for i in range(3))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == sum(v for k, v in tally.items() if not k.startswith("T"))
    for r in rows:
        assert "-bar_value-p" in r["id"]
        target = r["conversations"][1]["value"]
        if r["id"].endswith("-answer"):  # a right answer (sampled, else the teacher's) against a wrong one
            better = int(target[-2])
            _, question = _chart_and_question(r["id"])
            prompt = r["conversations"][0]["value"]
            first, second = prompt.split("Repsonse 1: ")[1].split("\nRepsonse 2: ")
            said = {1: first, 2: second.rsplit("\n\n Please", 1)[0]}
            concluded = {k: parse_stages(v).stages.get("conclusion") or "" for k, v in said.items()}
            assert score(concluded[better], question.answer, list(question.choices or [])) is True
            assert not score(concluded[3 - better], question.answer, list(question.choices or []))


def test_onpolicy_pairs_a_wrong_answer_with_a_sampled_right_one_before_the_teachers():
    from chartbench.onpolicy import examples_from_samples

    item = make_item(5, 0, ("bar_value",), split="train")
    good = teacher.format_trace(teacher.trace(item.chart, item.question))
    own = good.replace("<SUMMARY>", "<SUMMARY> Let me see.")  # right, in its own words
    wrong = re.sub(r"<CONCLUSION> .*? </CONCLUSION>", "<CONCLUSION> 99 </CONCLUSION>", good)
    for answers, shown in (([own, wrong], own), ([wrong], good)):
        examples, tally = examples_from_samples(item, answers, random.Random(0))
        pairs = [e for e in examples if e.kind == "answer"]
        assert len(pairs) == 2 and {e.better for e in pairs} == {1, 2}  # both orders
        assert all(f"Repsonse {e.better}: {shown}\n" in e.prompt for e in pairs)


def _chart_and_question(row_id: str):
    seed, i = row_id.split("-")[:2]
    item = make_item(int(seed), int(i), ("bar_value",), split="train")
    return item.chart, item.question


def test_a_stage_is_sampled_after_the_teachers_earlier_stages():
    from chartbench.onpolicy import stage_start

    item = make_item(5, 1, ("bar_tallest",), split="train")
    good = teacher.trace(item.chart, item.question)
    assert stage_start(good, "summary") == ""
    for i, stage in enumerate(("caption", "reasoning", "conclusion"), start=1):
        start = stage_start(good, stage)
        assert start.endswith(f"</{('summary', 'caption', 'reasoning')[i - 1].upper()}>")
        assert {k: v for k, v in parse_stages(start).stages.items() if v} == \
            {k: good[k] for k in ("summary", "caption", "reasoning")[:i]}


def test_stage_samples_pair_each_wrong_body_once_against_a_right_one():
    from chartbench.onpolicy import examples_from_stage_samples

    item = make_item(5, 0, ("bar_value",), split="train")
    good = teacher.trace(item.chart, item.question)
    answer = item.question.answer
    # a conclusion: the wrong one against the model's own right one ("2." is right by the scorer)
    examples, tally = examples_from_stage_samples(item, "conclusion", [f"{answer}.", "99", "99", ""], random.Random(0))
    assert tally == {"conclusion_sampled": 4, "conclusion_sampled_right": 1}
    assert len(examples) == 2 and {e.better for e in examples} == {1, 2}  # "99" once, in both orders
    assert all(f"Repsonse {e.better}: {answer}.\n" in e.prompt and good["reasoning"] in e.prompt for e in examples)
    # a reasoning: the wrong one against the teacher's, the caption as the hint, and a pre-check pair
    wrong = good["reasoning"].replace(answer, "99")
    examples, tally = examples_from_stage_samples(item, "reasoning", [wrong, good["reasoning"]], random.Random(0))
    assert tally == {"reasoning_sampled": 2, "reasoning_sampled_right": 1}
    pairs = [e for e in examples if e.kind == "reasoning"]
    assert len(pairs) == 2 and all(f"Repsonse {e.better}: {good['reasoning']}\n" in e.prompt
                                   and good["caption"] in e.prompt for e in pairs)
    assert sorted(e.target for e in examples if e.kind == "check") == ["correct", "incorrect"]


def test_onpolicy_samples_stages_after_the_teachers_prefix(tmp_path):
    pytest.importorskip("torch")
    from chartbench.onpolicy import write_onpolicy
    from stagewise.demo import MODEL_DIR

    path, tally = write_onpolicy(tmp_path, MODEL_DIR, n=3, seed=5, samples=2, temperatures=(2.0,), batch=3,
                                 types=("bar_value",), stages=("reasoning",))
    assert tally["T2.0:reasoning_sampled"] == 6 and tally["T2.0:answers"] == 6
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == sum(v for k, v in tally.items() if not k.startswith("T"))
    staged = [r for r in rows if "-srea" in r["id"] and r["id"].endswith("-reasoning")]
    assert tally["T2.0:reasoning_sampled_right"] < 6 and staged  # at T 2.0 some reasonings are wrong (seeded)
    for r in staged:  # the teacher's reasoning is the better one, the teacher's caption the hint
        chart, question = _chart_and_question(r["id"])
        good = teacher.trace(chart, question)
        better = int(r["conversations"][1]["value"][-2])
        prompt = r["conversations"][0]["value"]
        assert f"Repsonse {better}: {good['reasoning']}\n" in prompt and good["caption"] in prompt
