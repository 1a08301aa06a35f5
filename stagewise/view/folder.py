"""What `stagewise view DIR` is looking at: one run folder, or a compare folder of one run per graph."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS, TRACES, SUMMARY, REPORT = "results.jsonl", "traces.jsonl", "summary.json", "report.json"


class NotARun(ValueError):
    """DIR holds neither results.jsonl nor <graph>/results.jsonl."""


def read_json(path: Path) -> dict[str, Any]:
    """A small JSON file, or {} when it is missing or unreadable (a run still in progress has no summary)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class RunFolder:
    root: Path
    graphs: dict[str, Path] = field(default_factory=dict)  # graph name -> its folder (results, traces, summary)
    compare: bool = False

    def summary(self, graph: str) -> dict[str, Any]:
        return read_json(self.graphs[graph] / SUMMARY)

    def report(self) -> dict[str, dict[str, Any]]:
        """report.json's figures per graph (a compare folder's), by graph name."""
        entries = read_json(self.root / REPORT).get("graphs") or []
        return {e["graph"]: e for e in entries if isinstance(e, dict) and "graph" in e}


def _graph_name(folder: Path) -> str:
    name = read_json(folder / SUMMARY).get("graph")
    if not name:
        try:
            with open(folder / RESULTS, "rb") as f:
                name = json.loads(f.readline() or b"{}").get("graph")
        except (OSError, ValueError):
            name = None
    return name or folder.name


def open_folder(path: Path) -> RunFolder:
    root = path.expanduser().resolve()
    if not root.is_dir():
        raise NotARun(f"{path}: no such folder")
    if (root / RESULTS).is_file():
        return RunFolder(root, {_graph_name(root): root})
    subs = {p.name: p for p in sorted(root.iterdir()) if (p / RESULTS).is_file()}
    if not subs:
        raise NotARun(f"{path}: not a run folder (no {RESULTS}) nor a compare folder (no <graph>/{RESULTS})")
    order = [g for g in RunFolder(root).report() if g in subs]  # the compare's own order first
    return RunFolder(root, {g: subs[g] for g in order + sorted(set(subs) - set(order))}, compare=True)
