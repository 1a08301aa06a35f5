"""How well a run's captions read the charts: colours, values and counts against the chart's data.

Accuracy alone hides why an answer is wrong; a caption is where the picture is read, so its errors
(a wrong colour, a value one step off, a bar left out) say what the model cannot see. Captions are
parsed in the teacher's words ("Bar 2 is red at 5.", "A blue line chart. Point 1 is at 3."); a caption
in other words reads as wrong.
"""
from __future__ import annotations

import re
from pathlib import Path

from chartbench.bench import read_items
from chartbench.score import rows_by_id

_BAR = re.compile(r"Bar (\d+) is ([a-z]+) at (\d+)\.")
_POINT = re.compile(r"Point (\d+) is at (\d+)\.")
_LINE = re.compile(r"A ([a-z]+) line chart\.")


def read_caption(caption: str, kind: str) -> tuple[list[str], list[int]]:
    """(colours, values) a caption states, left to right; a line chart's one colour."""
    if kind == "bar":
        found = _BAR.findall(caption)
        return [c for _, c, _ in found], [int(v) for _, _, v in found]
    line = _LINE.search(caption)
    return ([line.group(1)] if line else []), [int(v) for _, v in _POINT.findall(caption)]


def caption_scores(results, items) -> dict[str, dict]:
    """Per chart kind and "all": captions, `colours` (share whose every colour is right), `values`
    (every value right), `exact` (the whole reading right, count included); `bars` adds the share of
    single bars whose colour is right. A missing or error row counts as unread."""
    rows = rows_by_id(Path(results))
    tally: dict[str, dict[str, int]] = {}
    for item in read_items(items):
        chart = item.chart
        caption = ((rows.get(item.id) or {}).get("stages") or {}).get("caption") or ""
        colours, values = read_caption(caption, chart.kind)
        want_colours = list(chart.colours) if chart.kind == "bar" else [chart.line_colour]
        for key in (chart.kind, "all"):
            t = tally.setdefault(key, dict.fromkeys(
                ("captions", "colours", "values", "exact", "bars", "bar_colours"), 0))
            t["captions"] += 1
            t["colours"] += colours == want_colours
            t["values"] += values == list(chart.values)
            t["exact"] += colours == want_colours and values == list(chart.values)
            if chart.kind == "bar":
                t["bars"] += chart.n
                t["bar_colours"] += sum(a == b for a, b in zip(colours, want_colours))
    out = {}
    for key, t in tally.items():
        n = t["captions"]
        out[key] = {"captions": n, "colours": round(t["colours"] / n, 3), "values": round(t["values"] / n, 3),
                    "exact": round(t["exact"] / n, 3)}
        if t["bars"]:
            out[key]["bars"] = round(t["bar_colours"] / t["bars"], 3)
    return out
