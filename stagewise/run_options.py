"""DIR/options.json: the options that decide a run's rows, so a rerun resumes the same run or says why not.

A rerun skips every item with a row. Were it given another temperature, model or graph, it would keep
the old rows and report the new options, mixing two runs under one name. So the first run records the
options that shape an answer, and a rerun that changes one is a usage error naming it. Options that
only change how the rows are obtained (servers, concurrency, limits, retries, cache, Ray) may change.
A folder written before this file existed is adopted as it is. docs/runs.md.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from engine.errors import UsageError

FILE = "options.json"
# option → its value on the command line (args attribute); model, judge model and graph come from the job
SHAPING = ("mode", "n", "selection", "faithful", "max_sentences", "judge_order", "judge_logprobs",
           "temperature", "judge_temperature", "top_p", "max_tokens", "seed", "max_image_side")


def options_of(args: argparse.Namespace, graph: str, model: str, judge_model: str,
               selection: str | None) -> dict[str, Any]:
    found = {"graph": graph, "model": model, "judge_model": judge_model}
    found |= {name: getattr(args, name, None) for name in SHAPING}
    found["selection"] = selection or args.selection
    return found


def check(out: Path, options: dict[str, Any]) -> None:
    """UsageError if DIR's rows were made with other options."""
    recorded = _recorded(out) or {}
    changed = [k for k in options if k in recorded and recorded[k] != options[k]]
    if changed:
        was = " ".join(_flag(k, recorded[k]) for k in changed)
        now = " ".join(_flag(k, options[k]) for k in changed)
        raise UsageError(f"{out} holds rows made with {was}; this command asks {now}. Rerun with the "
                         f"same options to resume that run, or pass a new --out")


def record(out: Path, options: dict[str, Any]) -> None:
    """DIR/options.json says these options (after `check`): a folder without rows, or without the
    file, takes them."""
    recorded = _recorded(out)
    if recorded is not None and recorded.keys() >= options.keys():
        return
    out.mkdir(parents=True, exist_ok=True)
    part = out / (FILE + ".part")
    part.write_text(json.dumps({**(recorded or {}), **options}, indent=2) + "\n", encoding="utf-8")
    os.replace(part, out / FILE)


def _recorded(out: Path) -> dict[str, Any] | None:
    """The options DIR's rows were made with; None where no row needs them kept."""
    results = out / "results.jsonl"
    if not (out / FILE).is_file() or not results.is_file() or results.stat().st_size == 0:
        return None
    try:
        return json.loads((out / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{out / FILE} is unreadable ({exc}): remove it to adopt the run as it is") from None


def _flag(name: str, value: Any) -> str:
    flag = "--" + name.replace("_", "-")
    if value is True or value is False:
        return flag if value else f"(no {flag})"
    return f"{flag} {'(default)' if value is None else value}"
