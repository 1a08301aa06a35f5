"""Verdicts that resist a judge's position bias, the judge's quality in every report, and the vote baseline.

All against the scripted server (tests/fake_server.py): candidates of one request have qualities
q = 0..N-1, its judge prefers the higher q; [[judge-always-2]] makes it write "response 2" every time
while its logprobs still carry the preference; [[answers-by-q:...]] makes candidates conclude different
answers, so a judge's accuracy against the reference is known.
"""
from __future__ import annotations

import json
import re
from collections import Counter

from conftest import read_jsonl, stagewise, write_items

N = 4


def _items(tmp_path, directives: str, answer: str = "A", count: int = 3, name: str = "items.jsonl"):
    return write_items(tmp_path / name, [
        {"id": f"j{i}", "question": f"Which bar is the tallest? ({i}) {directives}", "answer": answer}
        for i in range(count)])


def _generate(tmp_path, server, items, graph, *extra, name="run"):
    out = tmp_path / name
    stagewise("generate", items, "--out", out, "--graph", graph, "--n", N, "--model", "hosted_vllm/fake",
              "--api-base", server.api_base, "--no-progress", *extra, check=True)
    return out, read_jsonl(out / "results.jsonl"), read_jsonl(out / "traces.jsonl")


def _best_everywhere(rows) -> bool:
    return all(re.findall(r"q=(\d+)", text) == [str(N - 1)] for r in rows for text in r["stages"].values())


def test_both_orders_with_logprobs_recover_from_an_always_2_judge(tmp_path, fake_server):
    items = _items(tmp_path, "[[judge-always-2]]")
    _, rows, traces = _generate(tmp_path, fake_server, items, "stage_beam", "--judge-order", "both", name="both")
    assert all(r["status"] == "ok" for r in rows) and _best_everywhere(rows)
    judged = [v for v in traces if v["event"] == "judge.verdict" and v["parse"] != "precheck"]
    assert judged and all(out.endswith("I choose response 2.") for v in judged for out in v["outputs"])
    assert all(len(v["orders"]) == 2 and {o["by"] for o in v["orders"]} == {"logprob"} for v in judged)
    assert all(v["winner"] == max(v["pair"], key=lambda c: _q_of(traces, v, c)) for v in judged)

    _, rows, _ = _generate(tmp_path, fake_server, items, "stage_beam", "--faithful", name="faithful")
    assert not _best_everywhere(rows), "the reference's rule takes response 2 every time"
    _, rows, _ = _generate(tmp_path, fake_server, items, "stage_beam", "--judge-logprobs", "off", name="text")
    assert not _best_everywhere(rows)


def _q_of(traces, verdict, index) -> int:
    """The quality of candidate `index` of the stage this verdict judged (its select's parent span)."""
    select = next(e for e in traces if e["event"] == "span.end" and e["span_id"] == verdict["parent_id"])
    text = next(e["text"] for e in traces if e["event"] == "candidate" and e["span_id"] == select["parent_id"]
                and e["index"] == index)
    return int(re.findall(r"q=(\d+)", text)[-1])


def test_logprob_verdicts_replay_from_the_cache(tmp_path, fake_server):
    items = _items(tmp_path, "[[judge-always-2]]")
    cache = tmp_path / "cache.sqlite"
    runs = [_generate(tmp_path, fake_server, items, "best_of_n", "--cache", cache, name=name)[2]
            for name in ("a", "b")]
    verdicts = [sorted((v["item_id"], v["pair"], v["winner"], v["parse"]) for v in t if v["event"] == "judge.verdict")
                for t in runs]
    # the text always says "2": only replayed logprobs give the same (logprob) verdicts again
    assert verdicts[0] == verdicts[1] and {v[3] for v in verdicts[0]} == {"logprob"}
    assert {t["cache"] for t in runs[1] if t["event"] == "llm.call"} == {"hit"}


def _compare(tmp_path, server, items, *extra, name):
    out = tmp_path / name
    stagewise("compare", items, "--out", out, "--graphs", "best_of_n,stage_beam", "--n", N,
              "--model", "hosted_vllm/fake", "--api-base", server.api_base, "--no-progress", *extra, check=True)
    report = json.loads((out / "report.json").read_text())
    return {g["graph"]: g for g in report["graphs"]}, out


def test_report_and_summary_give_the_judges_known_accuracy(tmp_path, fake_server):
    # candidates of quality q conclude "ABCD"[q]; the reference is D, the best: a pair is decidable when
    # it holds the q=3 candidate, and a judge preferring the higher q is always right on it
    right = _items(tmp_path, "[[answers-by-q:A,B,C,D]]", answer="D", name="right.jsonl")
    graphs, out = _compare(tmp_path, fake_server, right, name="right")
    for name in ("best_of_n", "stage_beam"):
        assert graphs[name]["judge_accuracy"] == 1.0 and graphs[name]["judge_decidable"] > 0
    assert graphs["best_of_n"]["judge"]["answer"]["decidable"] == 3 * 2  # round 1 and the final, per item
    assert graphs["stage_beam"]["judge"]["conclusion"]["accuracy"] == 1.0
    summary = json.loads((out / "best_of_n" / "summary.json").read_text())
    assert summary["judge"]["stages"]["answer"] == graphs["best_of_n"]["judge"]["answer"]
    stage_beam = json.loads((out / "stage_beam" / "summary.json").read_text())["judge"]["all"]
    assert (graphs["stage_beam"]["judge_fallback_rate"], graphs["stage_beam"]["judge_second_rate"]) == \
        (stage_beam["fallback_rate"], stage_beam["second_rate"])  # the report's columns are summary.json's
    assert "picks 2nd" in (out / "report.md").read_text()

    wrong = _items(tmp_path, "[[answers-by-q:A,B,C,D]] [[judge-lower]]", answer="D", name="wrong.jsonl")
    graphs, _ = _compare(tmp_path, fake_server, wrong, name="wrong")
    assert graphs["best_of_n"]["judge_accuracy"] == 0.0 and graphs["best_of_n"]["accuracy"] == 0.0

    # always "2", read as text: every verdict names the second position; in both orders they never agree
    biased = _items(tmp_path, "[[judge-always-2]]", name="biased.jsonl")
    graphs, _ = _compare(tmp_path, fake_server, biased, "--judge-logprobs", "off", name="biased")
    answer = graphs["best_of_n"]["judge"]["answer"]
    assert answer["second_rate"] == 1.0 and answer["agreement"] is None and answer["fallback_rate"] == 0.0
    graphs, _ = _compare(tmp_path, fake_server, biased, "--judge-logprobs", "off", "--judge-order", "both",
                         name="biased-both")
    answer = graphs["best_of_n"]["judge"]["answer"]
    assert answer["second_rate"] == 1.0 and answer["agreement"] == 0.0 and answer["verdicts"] == 3 * (N - 1)


def test_vote_majority_wins_without_a_judge(tmp_path, fake_server):
    # seed 0: the whole-answer candidate i has quality i; answers A, A, B, C: A has the majority
    items = _items(tmp_path, "[[answers-by-q:A,A,B,C]]", answer="A")
    _, rows, traces = _generate(tmp_path, fake_server, items, "vote")
    assert all(r["correct"] and r["usage"]["calls"] == N for r in rows)
    assert not [t for t in traces if t["event"] == "judge.verdict"]


def test_vote_tie_goes_to_the_judge(tmp_path, fake_server):
    # A, A, B, B: a tie between A (first: q=0) and B (first: q=2); the judge prefers the higher q → B
    items = _items(tmp_path, "[[answers-by-q:A,A,B,B]]", answer="B")
    _, rows, traces = _generate(tmp_path, fake_server, items, "vote")
    assert all(r["correct"] and r["answer"].endswith("B.") for r in rows)
    verdicts = [t for t in traces if t["event"] == "judge.verdict"]
    judged = [v for v in verdicts if v["parse"] != "forfeit"]
    assert len(judged) == 3 and all(sorted(v["pair"]) == [0, 2] and v["winner"] == 2 for v in judged)
    assert all(r["usage"]["calls"] == N + 1 for r in rows)  # one judge call: the others forfeit

    items = _items(tmp_path, "[[answers-by-q:A,A,B,B]] [[judge-lower]]", answer="B", name="lower.jsonl")
    _, rows, _ = _generate(tmp_path, fake_server, items, "vote", name="lower")
    assert all(r["answer"].endswith("A.") and not r["correct"] for r in rows)


def test_all_stages_is_each_figure_over_every_stages_own_counts():
    from search.judge_quality import judge_report

    def verdict(stage, i, agreed, parse="ok"):
        """Both orders asked; agreed None: the second order was unreadable."""
        second = None if agreed is None else 1 if agreed else 0
        orders = [{"pair": [0, 1], "winner": 1}, {"pair": [1, 0], "winner": second}]
        return [{"event": "item.end", "item_id": f"{stage}{i}", "trace_id": f"{stage}{i}"},
                {"event": "judge.verdict", "item_id": f"{stage}{i}", "trace_id": f"{stage}{i}", "stage": stage,
                 "pair": [0, 1], "winner": 1, "parse": parse, "orders": orders, "agreed": agreed}]

    # caption: 10 verdicts, 4 read in both orders (1 agreed), 1 drawn at random; summary: 1 verdict, agreed
    events = [e for i in range(10) for e in verdict("caption", i, (i == 0) if i < 4 else None,
                                                    "fallback" if i == 9 else "ok")]
    events += verdict("summary", 0, True)
    report = judge_report(events, {})
    assert report["stages"]["caption"]["agreement"] == 0.25 and report["stages"]["summary"]["agreement"] == 1.0
    assert report["all"]["agreement"] == 0.4  # 2 of the 5 verdicts read in both orders, not (0.25·10 + 1)/11
    assert report["all"]["second_rate"] == 0.875  # 14 of 16 orders read named the second
    assert report["all"]["fallback_rate"] == round(1 / 11, 4) and report["all"]["verdicts"] == 11
    assert report["all"]["accuracy"] is None and report["all"]["decidable"] == 0


def test_vote_counts_equal_answers_as_one_and_different_ones_apart():
    from search.graphs import conclusion_key

    def key(body, choices=None):
        return conclusion_key(f"<CONCLUSION>{body}</CONCLUSION>", choices)

    assert key("3") == key("3.0") == key("The answer is 3.") and key("1,000") == key("1000")
    assert key("1234567") != key("1234571")                 # every digit counts
    assert key("The answer is -3") == key("-3") != key("3")  # the minus is the number's
    assert key("B", ["x", "y"]) == key("b", ["x", "y"]) == key("(B) y", ["x", "y"]) == "B"
    assert key("The Eiffel Tower") == key("eiffel tower.")
    assert conclusion_key("<SUMMARY>no conclusion</SUMMARY>") is None
    assert conclusion_key("Paris.") == conclusion_key("<CONCLUSION>paris</CONCLUSION>")  # a plain answer votes


def test_litellm_route_reads_logprobs_too(tmp_path, fake_server):
    items = _items(tmp_path, "[[judge-always-2]]")
    _, rows, traces = _generate(tmp_path, fake_server, items, "best_of_n", "--client", "litellm")
    assert _best_everywhere(rows)
    verdicts = [v for v in traces if v["event"] == "judge.verdict"]
    assert verdicts and {v["parse"] for v in verdicts} == {"logprob"}


def _answers(*replies):
    """An `ask` that returns these (text, logprobs) replies in turn."""
    it = iter(replies)

    async def ask():
        return next(it)
    return ask


def _lp(p1: float):
    """Logprobs of "I choose response 2." whose verdict token puts p1 on "1"."""
    import math
    said = [("I", {"I": 0.0}), (" choose", {" choose": 0.0}), (" response", {" response": 0.0})]
    return said + [(" 2", {" 1": math.log(p1), " 2": math.log(1 - p1)}), (".", {".": 0.0})]


async def test_both_orders_agreement_margin_and_seeded_tie():
    import random

    from judges.verdict import decide_both

    say = lambda n, lp=None: (f"Since it is, I choose response {n}.", lp)  # noqa: E731
    d = await decide_both(_answers(say(1)), _answers(say(2)), random.Random(0))
    assert (d.winner, d.parse, d.agreed) == (0, "ok", True)  # A first said 1, A second said 2: agreed on A
    # both said "2" (A, then B): the orders disagree; read as text, a tie
    d = await decide_both(_answers(say(2, _lp(0.3))), _answers(say(2, _lp(0.2))), random.Random(0),
                          use_logprobs=False)
    assert d.parse == "tie" and d.agreed is False
    # with logprobs: P(A) 0.3 shown first, 1 - 0.2 = 0.8 shown second: still disagreeing, mean 0.55 → A
    d = await decide_both(_answers(say(2, _lp(0.3))), _answers(say(2, _lp(0.2))), random.Random(0))
    assert (d.winner, d.parse, d.agreed) == (0, "logprob", False)
    # logprob readings that agree decide, whatever the text: 0.45 → B; B shown first at 0.6 → B
    d = await decide_both(_answers(say(1, _lp(0.45))), _answers(say(2, _lp(0.6))), random.Random(0))
    assert (d.winner, d.parse, d.agreed) == (1, "ok", True)
    winners = {(await decide_both(_answers(say(2)), _answers(say(2)), random.Random(s))).winner for s in range(20)}
    assert winners == {0, 1}  # text disagreement, no logprobs: the seeded draw, either way
    again = [(await decide_both(_answers(say(2)), _answers(say(2)), random.Random(7))).winner for _ in range(3)]
    assert len(set(again)) == 1


def test_verdict_and_check_probabilities_from_split_tokens():
    import math

    from judges.logprobs import check_failure_probability, verdict_probability

    split = [("I", {}), (" cho", {}), ("ose", {}), (" resp", {}), ("onse", {}), (" ", {}),
             ("1", {"1": math.log(0.6), "2": math.log(0.2), "x": math.log(0.2)})]
    assert abs(verdict_probability(split) - 0.75) < 1e-9
    assert verdict_probability([("Both", {"Both": 0.0})]) is None
    # the format line echoed back ("I choose response [1/2]") names no response, as for the text rule
    echo = [("I choose response", {}), (" [", {}), ("1", {"1": math.log(0.9), "2": math.log(0.1)}), ("/", {}),
            ("2", {}), ("].", {})]
    assert verdict_probability(echo) is None and verdict_probability(echo[:3] + [("].", {})]) == 0.9
    # "In" may begin "Incorrect": with that much mass on it the probabilities cannot say; the text decides
    assert check_failure_probability([(" in", {" in": math.log(0.7), "correct": math.log(0.3)})]) is None
    assert check_failure_probability([("In", {"In": math.log(0.9), "Correct": math.log(0.1)})]) is None
    assert check_failure_probability([("correct", {"correct": math.log(0.8), "in": math.log(0.1)})]) == 0.0
    assert abs(check_failure_probability([("inc", {"inc": math.log(0.7), "correct": math.log(0.3)})]) - 0.7) < 1e-9


def test_faithful_with_both_orders_is_a_usage_error(tmp_path):
    items = _items(tmp_path, "")
    proc = stagewise("generate", items, "--out", tmp_path / "o", "--model", "hosted_vllm/fake", "--api-base",
                     "http://127.0.0.1:9/v1", "--faithful", "--judge-order", "both")
    assert proc.returncode == 2 and "reference's order only" in proc.stderr and not (tmp_path / "o").exists()


def test_chartbench_verdicts_name_the_question_types_where_the_judge_chose_wrong(tmp_path, fake_server):
    from chartbench.bench import make_items
    from chartbench.verdicts import slips, verdicts_by_type

    # two chartbench items whose scripted candidates conclude three wrong answers and the right one last
    # (quality 3); a judge preferring the lower quality is wrong on every decidable pair
    rows = []
    for item in make_items(2, seed=3, types=("bar_tallest", "line_peak")):
        row = {k: v for k, v in item.row("").items() if k != "image"}  # the scripted server reads no picture
        row["question"] += f" [[answers-by-q:x1,x2,x3,{item.question.answer}]] [[judge-lower]]"
        rows.append(row)
    items = write_items(tmp_path / "items.jsonl", rows)
    out, _, _ = _generate(tmp_path, fake_server, items, "best_of_n")
    per_type, wrong = verdicts_by_type(out, items)
    assert set(per_type) == {"bar_tallest", "line_peak", "all"}
    # round 1 pairs q=2 with q=3 (decidable) and drops q=3; the final is between two wrong answers
    assert all(r["decidable"] == 1 and r["correct"] == 0 for t, r in per_type.items() if t != "all")
    assert per_type["all"] == {"decidable": 2, "correct": 0, "accuracy": 0.0}
    assert len(wrong) == 2 and all(w["stage"] == "answer" and w["said"] for w in wrong)
    assert {w["reference"] for w in wrong} == {row["answer"] for row in rows}
    # the scripted judge does not write the trained judge's steps: both wrong verdicts are slips of form
    assert slips(out, items) == {"right": Counter(), "wrong": Counter(form=2)}


def test_a_verdicts_first_slip_is_named_step_by_step():
    from chartbench.bench import make_items
    from chartbench.verdicts import first_slip

    item = next(i for i in make_items(40, seed=3) if i.question.qtype == "bar_value")
    q, right = item.question, item.question.answer
    wrong = str(int(right) + 1)

    def said(working, a, yes_a, b, yes_b, pick):
        return (f"Since the image shows ...; so the answer is {working}; response 1 says {a}, {yes_a}, and "
                f"response 2 says {b}, {yes_b}, I choose response {pick}.")

    pair = (right, wrong)
    assert first_slip(said(right, right, "yes", wrong, "no", 1), pair, q) is None
    assert first_slip(said(wrong, right, "no", wrong, "yes", 2), pair, q) == "working"
    assert first_slip(said(right, wrong, "no", wrong, "no", 2), pair, q) == "quote"
    assert first_slip(said(right, right, "no", wrong, "no", 2), pair, q) == "check"
    assert first_slip(said(right, right, "yes", wrong, "no", 2), pair, q) == "pick"
    assert first_slip("I choose response 1.", pair, q) == "form"
    # a misquote of an answer that is wrong anyway earns the same "no": no slip
    assert first_slip(said(right, right, "yes", "nothing", "no", 1), (right, "garbage words"), q) is None
