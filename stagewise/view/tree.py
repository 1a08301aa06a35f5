"""One item's trace events, arranged as the item page shows them: step by step, each step's candidates
(their texts, their calls), the verdicts that chose among them (pair, winner, parse, reason, pre-checks,
the judge's calls) and the winner.

Traces with `span.end` events (docs/traces.md, engine/trace_events.py) place every event by its span:
an event belongs to the nearest enclosing span of kind "stage" and, for a judge's events, of kind
"verdict" (walking up from its `span_id`, then its `parent_id`: `llm.call` is a leaf span of its own,
`candidate`/`judge.*` name the span they belong to). Older traces wrote no spans; there a step starts
where generation starts again after a selection, or a candidate index comes again, and a verdict is its
`judge.verdict`'s own span. Candidate texts come from `candidate` events; without them only the
winners' texts are known, from the row.
"""
from __future__ import annotations

from typing import Any

CALL_FIELDS = ("role", "stage", "candidate", "model", "n", "sample", "prompt_tokens", "completion_tokens",
               "cost_usd", "latency_s", "cache", "attempt", "status", "error", "finish_reason", "judge_attempt",
               "checked", "text", "messages", "fallback")
STEP_KINDS = ("stage", "step")
GENERATE_EVENTS = ("candidate",)
SELECT_EVENTS = ("judge.verdict", "judge.check")


def _call(event: dict[str, Any]) -> dict[str, Any]:
    call = {k: event[k] for k in CALL_FIELDS if k in event}
    if event.get("event") == "llm.fallback":
        call["status"] = "fallback"
    return call


def _is_generate(event: dict[str, Any]) -> bool:
    return event["event"] in GENERATE_EVENTS or (
        event["event"] in ("llm.call", "llm.fallback") and event.get("role", "generate") == "generate")


def _is_select(event: dict[str, Any]) -> bool:
    return event["event"] in SELECT_EVENTS or (
        event["event"] in ("llm.call", "llm.fallback") and event.get("role") in ("judge", "check"))


class _Spans:
    """span_id -> its span.end event, and walking up from an event to an enclosing span of a kind."""

    def __init__(self, events: list[dict[str, Any]]):
        self.by_id = {e["span_id"]: e for e in events if e["event"] == "span.end" and e.get("span_id")}

    def enclosing(self, event: dict[str, Any], kinds: tuple[str, ...]) -> str | None:
        for span_id in (event.get("span_id"), event.get("parent_id")):
            for _ in range(64):  # a cycle in a damaged file must not hang the page
                span = self.by_id.get(span_id) if span_id else None
                if span is None:
                    break
                if span.get("kind") in kinds:
                    return span_id
                span_id = span.get("parent_id")
        return None


def _new_step(key: str, stage: str | None, span: dict[str, Any] | None = None) -> dict[str, Any]:
    span = span or {}
    return {"key": key, "stage": span.get("stage") or span.get("name") or stage, "span": span.get("span_id"),
            "start_ts": span.get("start_ts"), "end_ts": span.get("end_ts"), "selection": None,
            "candidates": {}, "verdicts": {}, "calls": [], "winner": None, "select_winner": None,
            "status": span.get("status"), "error": span.get("error")}


def _candidate(step: dict[str, Any], index: Any) -> dict[str, Any]:
    index = int(index) if isinstance(index, (int, float)) or str(index).isdigit() else 0
    return step["candidates"].setdefault(index, {"index": index, "text": None, "text_from": None, "repairs": [],
                                                 "prefix_len": None, "calls": [], "winner": False})


def _verdict(step: dict[str, Any], key: str) -> dict[str, Any]:
    return step["verdicts"].setdefault(key, {"pair": None, "winner": None, "parse": None, "reason": None,
                                             "outputs": [], "round": None, "selection": None, "stage": None,
                                             "checks": [], "calls": [], "order": len(step["verdicts"])})


def _steps(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spans = _Spans(events)
    steps: dict[str, dict[str, Any]] = {}
    guess = 0  # older traces: the step number, guessed from the order of events
    in_select, last_stage, seen_candidates = False, None, set()
    for event in events:
        name = event["event"]
        if name in ("item.start", "item.end", "item.duplicate") or (
                name == "span.end" and event.get("kind") not in STEP_KINDS + ("select",)):
            continue
        generate, select = _is_generate(event), _is_select(event)
        key = spans.enclosing(event, STEP_KINDS)
        if key is None:  # no spans written: guess
            if generate:
                index = event.get("candidate", event.get("index"))
                ok_sample = name == "candidate" or event.get("status") == "ok"
                if in_select or (last_stage is not None and event.get("stage") != last_stage) or (
                        ok_sample and index in seen_candidates):
                    guess, in_select, seen_candidates = guess + 1, False, set()
                last_stage = event.get("stage")
                if ok_sample:
                    seen_candidates.add(index)
            elif select:
                in_select = True
            key = f"step-{guess}"
        span = spans.by_id.get(key)
        step = steps.get(key) or steps.setdefault(key, _new_step(key, event.get("stage"), span))
        if name == "span.end":
            if event.get("kind") == "select":  # the selection's own account of its winner
                step["select_winner"] = event.get("winner")
                step["selection"] = event.get("mode") or step["selection"]
            continue
        if generate:
            cand = _candidate(step, event.get("candidate", event.get("index", 0)))
            if name == "candidate":
                cand.update(text=event.get("text"), text_from="trace", repairs=event.get("repairs") or [],
                            prefix_len=event.get("prefix_len"))
            else:
                cand["calls"].append(_call(event))
            step["stage"] = step["stage"] or event.get("stage")
        elif select:
            vspan = spans.enclosing(event, ("verdict",))
            if vspan is None and spans.by_id:  # a forfeit: decided without a judge, no verdict span
                vspan = f"{event.get('span_id')}/{len(step['verdicts'])}"
            elif vspan is None:  # older traces: a verdict's calls hang from the verdict's own span
                vspan = event.get("span_id") if name == "judge.verdict" else event.get("parent_id")
            verdict = _verdict(step, str(vspan))
            if name == "judge.verdict":
                verdict.update({k: event.get(k) for k in ("pair", "winner", "parse", "reason", "round", "selection",
                                                          "stage")})
                verdict["outputs"] = event.get("outputs") or []
                step["selection"] = step["selection"] or event.get("selection")
            elif name == "judge.check":
                verdict["checks"].append({k: event.get(k) for k in ("candidate", "passed", "output")})
            else:
                verdict["calls"].append(_call(event))
        elif name in ("llm.call", "llm.fallback"):
            step["calls"].append(_call(event))
    return list(steps.values())


def _finish(step: dict[str, Any], row: dict[str, Any] | None, last_of_stage: bool) -> dict[str, Any]:
    verdicts = sorted(step["verdicts"].values(), key=lambda v: (v["round"] is None, v["round"] or 0, v["order"]))
    decided = [v for v in verdicts if v["winner"] is not None]
    chosen = step.pop("select_winner")
    if chosen is not None:
        step["winner"] = chosen
    elif decided:
        step["winner"] = decided[-1]["winner"]
    elif len(step["candidates"]) == 1:
        step["winner"] = next(iter(step["candidates"]))
    for v in verdicts:
        v.pop("order", None)
    if step["winner"] is not None and step["winner"] in step["candidates"]:
        winner = step["candidates"][step["winner"]]
        winner["winner"] = True
        if winner["text"] is None and row and last_of_stage:  # older traces: the chosen text is the row's
            text = (row.get("stages") or {}).get(step["stage"] or "")
            if text is None and step["stage"] == "full":
                text = row.get("response")
            if text is not None:
                winner.update(text=text, text_from="row")
    step["candidates"] = [step["candidates"][i] for i in sorted(step["candidates"])]
    step["verdicts"] = verdicts
    return step


def item_tree(events: list[dict[str, Any]], row: dict[str, Any] | None) -> dict[str, Any]:
    """The item's latest attempt as steps, plus its attempts' trace ids and the item's own figures."""
    attempts: list[str] = []
    for e in events:
        if e.get("trace_id") and e["trace_id"] not in attempts:
            attempts.append(e["trace_id"])
    ends = [e for e in events if e["event"] == "item.end"]
    current = (ends[-1].get("trace_id") if ends else None) or (attempts[-1] if attempts else None)
    mine = [e for e in events if e.get("trace_id") == current]
    steps = _steps(mine)
    last_index = {s["stage"]: i for i, s in enumerate(steps)}
    steps = [_finish(s, row, last_index.get(s["stage"]) == i) for i, s in enumerate(steps)]
    end = next((e for e in reversed(mine) if e["event"] == "item.end"), {})
    start = next((e for e in mine if e["event"] == "item.start"), {})
    return {"trace_id": current, "attempts": attempts, "attempt": start.get("attempt", len(attempts) or None),
            "end": {k: v for k, v in end.items() if k not in ("event", "item_id", "graph", "parent_id")},
            "steps": steps, "has_candidate_texts": any(e["event"] == "candidate" for e in mine),
            "has_spans": any(e["event"] == "span.end" for e in mine)}
