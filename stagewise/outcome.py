"""How a finished run reports itself: the final stdout line and the exit status (docs/runs.md).

0: every item ok. 3: the run went to its end but some rows are errors (one stderr line counts them by
cause). 2: bad usage. 130: interrupted (finished rows are kept; the same command resumes).
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

from engine.errors import RETRYABLE_CAUSES

EXIT_OK, EXIT_USAGE, EXIT_ERRORS, EXIT_INTERRUPTED = 0, 2, 3, 130


def summary_line(summary: dict[str, Any]) -> str:
    """Items, calls and what they cost, counting failed attempts too (a run of failures is not "0 calls")."""
    line = (f"{summary['items']} items: {summary['ok']} ok, {summary['error']} error · "
            f"{summary['calls']} calls, {summary.get('attempts', 0)} requests "
            f"({summary.get('failed_attempts', 0)} failed) · {summary['tokens']} tokens · "
            f"${summary['cost_usd']:.4f}")
    this_run = summary.get("this_run") or {}
    if summary.get("retried") or this_run.get("items", summary["items"]) != summary["items"]:
        line += f" · this run: {this_run.get('items', 0)} items ({summary.get('retried', 0)} retried)"
    return line


def exit_status(runs: list[tuple[Path, dict[str, Any]]]) -> int:
    """3 with one stderr line when any run's results hold error rows, else 0."""
    causes: Counter[str] = Counter()
    for _, summary in runs:
        causes.update(summary.get("errors_by_cause") or {})
    errors = sum(s["error"] for _, s in runs)
    if not errors:
        return EXIT_OK
    from engine.results import ranked  # not at import: every command loads this module

    by_cause = ", ".join(f"{n} {cause}" for cause, n in ranked(causes).items())
    retryable = sum(n for cause, n in causes.items() if cause in RETRYABLE_CAUSES)
    hint = (f"rerun the same command to retry the {retryable} provider/network ones" if retryable
            else "add --retry-errors all to run them again")
    where = ", ".join(str(out / "results.jsonl") for out, s in runs if s["error"])
    print(f"stagewise: {errors} item(s) ended in error ({by_cause}); {hint}; rows in {where}", file=sys.stderr)
    return EXIT_ERRORS
