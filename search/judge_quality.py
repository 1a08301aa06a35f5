"""How well the judge judged, per stage, read back from a run's traces and its items' reference answers.

A search is only as good as its verdicts, and accuracy alone cannot say why a search did not pay. Per
judge kind (stage), over the verdicts a judge made (not forfeits, not pre-check decisions, not pairs of
identical candidates, parse "same", which no judge was asked about):

- `second_rate`: how often the judge named the response shown second, over every order it was asked
  in. A judge without a position preference sits near 0.5; 1.0 is a fixed pick.
- `agreement`: with `--judge-order both`, how often the two orders named the same winner.
- `fallback_rate`: verdicts that could not be read and were drawn at random (parse "fallback").
- `accuracy` over `decidable` pairs: comparisons of a candidate whose final answer is right with one
  whose answer is wrong (whole answers, and CONCLUSION candidates), scored against the reference with
  judges/scorers.py's `score`; the share the judge gave to the right one.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from judges.scorers import score
from stages.tags import parse_stages

DECIDABLE = ("answer", "conclusion")  # judges whose candidates hold a final answer
NOT_JUDGED = ("forfeit", "precheck", "same")  # decisions no judge verdict made


def _events(path: Path) -> Iterable[dict[str, Any]]:
    if not path.is_file():
        return
    with open(path, "rb") as f:
        for line in f:
            try:
                yield json.loads(line)  # per line: an undecodable one is skipped, not fatal
            except ValueError:
                continue


def references(items_path: Path | None) -> dict[str, tuple[str, list[str] | None]]:
    """{item id: (reference answer, choices)} for the items of ITEMS.jsonl that have an answer."""
    out: dict[str, tuple[str, list[str] | None]] = {}
    for row in _events(Path(items_path)) if items_path else ():
        if isinstance(row, dict) and row.get("answer") is not None and row.get("id") is not None:
            choices = row.get("choices") if isinstance(row.get("choices"), list) else None
            out[str(row["id"])] = (str(row["answer"]), choices)
    return out


def _conclusion(text: str) -> str | None:
    return parse_stages(text).stages.get("conclusion")


@dataclass(frozen=True)
class Verdict:
    """One verdict a judge made, with what its pair concluded: `right` holds, per candidate of `pair`,
    whether its final answer scores right (None where the stage or item cannot say), so `correct` is
    None unless the pair is decidable."""

    item_id: str
    event: dict[str, Any]
    conclusions: tuple[str | None, str | None]
    right: tuple[bool, bool] | None

    @property
    def decidable(self) -> bool:
        return self.right is not None and self.right[0] != self.right[1]

    @property
    def correct(self) -> bool | None:
        if not self.decidable:
            return None
        a, b = self.event["pair"]
        return self.event["winner"] == (a if self.right[0] else b)


def verdicts(traces: Iterable[dict[str, Any]], refs: dict[str, tuple[str, list[str] | None]]) -> Iterable[Verdict]:
    """Every verdict a judge made (not forfeits, pre-check decisions or identical pairs) in each item's last
    finished attempt (a rerun repeats verdicts), with its pair's conclusions scored against `refs`."""
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    last: dict[str, str] = {}
    for e in traces:
        if e.get("trace_id"):
            by_trace[e["trace_id"]].append(e)
            if e.get("event") == "item.end":
                last[e["item_id"]] = e["trace_id"]
    for item_id, trace_id in last.items():
        events = by_trace[trace_id]
        texts: dict[str, dict[int, str]] = defaultdict(dict)  # stage span → candidate index → text
        stage_of_select: dict[str, str] = {}
        for e in events:
            if e["event"] == "candidate":
                texts[e["span_id"]][e["index"]] = e["text"]
            elif e["event"] == "span.end" and e.get("kind") == "select":
                stage_of_select[e["span_id"]] = e["parent_id"]
        ref = refs.get(item_id)
        for v in events:
            if v["event"] != "judge.verdict" or v.get("parse") in NOT_JUDGED:
                continue
            candidates = texts.get(stage_of_select.get(v.get("parent_id", ""), ""), {})
            pair = v.get("pair") or ()
            if v["stage"] not in DECIDABLE or len(pair) != 2 or not all(i in candidates for i in pair):
                yield Verdict(item_id, v, (None, None), None)
                continue
            conclusions = tuple(_conclusion(candidates[i]) for i in pair)
            right = tuple(score(c, ref[0], ref[1]) for c in conclusions) if ref is not None else None
            yield Verdict(item_id, v, conclusions, right)


def tallies(traces: Iterable[dict[str, Any]],
            refs: dict[str, tuple[str, list[str] | None]]) -> dict[str, dict[str, int]]:
    """Per stage, the counts every figure is a share of."""
    tally: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for verdict in verdicts(traces, refs):
        v = verdict.event
        t = tally[v["stage"]]
        t["verdicts"] += 1
        t["fallback"] += v.get("parse") == "fallback"
        orders = v.get("orders") or [{"pair": v["pair"], "winner": v["winner"]}]
        for o in orders:
            if o.get("winner") is not None:
                t["read"] += 1
                t["second"] += o["winner"] == o["pair"][1]
        if v.get("agreed") is not None:
            t["both_read"] += 1
            t["agreed"] += bool(v["agreed"])
        if verdict.decidable:
            t["decidable"] += 1
            t["correct"] += bool(verdict.correct)
    return tally


def judge_quality(traces: Iterable[dict[str, Any]],
                  refs: dict[str, tuple[str, list[str] | None]]) -> dict[str, dict[str, Any]]:
    """Per stage: verdicts, second_rate, agreement, fallback_rate, decidable, accuracy (None where
    nothing was measured)."""
    return {stage: figures(t) for stage, t in tallies(traces, refs).items()}


def figures(t: dict[str, int]) -> dict[str, Any]:
    """The figures of one tally (a stage's, or `pooled` over every stage)."""
    rate = lambda num, den: round(t[num] / t[den], 4) if t.get(den) else None  # noqa: E731
    return {"verdicts": t.get("verdicts", 0), "second_rate": rate("second", "read"),
            "agreement": rate("agreed", "both_read"), "fallback_rate": rate("fallback", "verdicts"),
            "decidable": t.get("decidable", 0), "accuracy": rate("correct", "decidable")}


def pooled(per_stage: dict[str, dict[str, int]]) -> dict[str, int]:
    """Every stage's counts summed: `all` is each figure over every stage's verdicts, orders and pairs."""
    total: dict[str, int] = defaultdict(int)
    for t in per_stage.values():
        for key, count in t.items():
            total[key] += count
    return total


def judge_report(traces: Iterable[dict[str, Any]],
                 refs: dict[str, tuple[str, list[str] | None]]) -> dict[str, Any]:
    """{"stages": per stage figures, "all": the same over every stage}."""
    per_stage = tallies(traces, refs)
    return {"stages": {stage: figures(t) for stage, t in per_stage.items()}, "all": figures(pooled(per_stage))}


def run_verdicts(run_dir: Path, items_path: Path | None) -> Iterable[Verdict]:
    """`verdicts` of DIR/traces.jsonl against ITEMS.jsonl's answers."""
    return verdicts(_events(Path(run_dir) / "traces.jsonl"), references(items_path))


def run_judge_quality(run_dir: Path, items_path: Path | None) -> dict[str, dict[str, Any]]:
    """`judge_quality` of DIR/traces.jsonl against ITEMS.jsonl's answers."""
    return judge_quality(_events(Path(run_dir) / "traces.jsonl"), references(items_path))


def add_to_summary(run_dir: Path, summary: dict[str, Any], items_path: Path | None) -> dict[str, Any]:
    """DIR/summary.json with `judge` (per stage) added, for a run whose items have reference answers."""
    refs = references(items_path)
    if not refs:
        return summary
    summary = {**summary, "judge": judge_report(_events(Path(run_dir) / "traces.jsonl"), refs)}
    (Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
