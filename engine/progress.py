"""A rich progress bar with what a person running a long job wants to see: rate, calls, tokens, cost."""
from __future__ import annotations

import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from engine.trace import Usage


class RunProgress:
    def __init__(self, total: int, done: int, usage: Usage, enabled: bool = True):
        self.usage = usage
        self.finished = 0
        self.errors = 0
        self._started = time.perf_counter()
        self.enabled = enabled
        self._shown = 0.0
        self._progress = Progress(
            TextColumn("[bold]items"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[stats]}"), disable=not enabled, refresh_per_second=4)
        self._task = self._progress.add_task("items", total=total or None, completed=done, stats="")

    def advance(self, ok: bool) -> None:
        self.finished += 1
        self.errors += not ok
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._shown < 0.25:  # redrawing the stats per item would cost more than the item
            self._progress.advance(self._task)
            return
        self._shown = now
        rate = self.finished / max(1e-9, time.perf_counter() - self._started)
        u = self.usage
        self._progress.update(self._task, advance=1, stats=(
            f"{rate:.1f} it/s · {u.calls} calls ({u.cache_hits} cached) · "
            f"{u.prompt_tokens + u.completion_tokens} tok · ${u.cost_usd:.4f} · {self.errors} err"))

    def __enter__(self) -> "RunProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)
