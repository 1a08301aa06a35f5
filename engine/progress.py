"""Run progress a person can trust: items, rate, calls, tokens, cost and errors, live and exact.

The counts are read from the usage of every item in flight plus every item finished, each time the
display is drawn, so they never lag the calls made and the last drawing is the run's exact total.
On a terminal that is a rich bar redrawn 4 times a second; elsewhere (a log file, CI, a pipe) a bar
would arrive as one cut-off line at the end, so plain lines are printed instead, every `every_s`
seconds and once at the end. Both go to stderr: stdout is for results.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from engine.trace import Usage


class _StatsColumn(ProgressColumn):
    """Recomputed on every refresh (no `max_refresh`), so it shows the counts of that moment."""

    def __init__(self, progress: "RunProgress"):
        super().__init__()
        self._run = progress

    def render(self, task) -> Text:
        return Text(self._run.stats())


class RunProgress:
    def __init__(self, total: int, done: int, enabled: bool = True, every_s: float = 10.0,
                 stream: TextIO | None = None):
        self.total, self.done = total, done
        self.finished = 0
        self.errors = 0
        self.enabled = enabled
        self._finished_usage = Usage()
        self._in_flight: dict[int, Usage] = {}
        self._lock = threading.Lock()  # the display is drawn from another thread
        self._started = time.perf_counter()
        self._stream = stream or sys.stderr
        self._every_s = every_s
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        console = Console(file=self._stream)
        self._bar: Progress | None = None
        if enabled and console.is_terminal:
            self._bar = Progress(TextColumn("[bold]items"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 _StatsColumn(self), console=console, refresh_per_second=4)
            self._task = self._bar.add_task("items", total=total or None, completed=done)

    def start(self, usage: Usage) -> None:
        """An item began; `usage` is its live counter (the client adds each call to it)."""
        with self._lock:
            self._in_flight[id(usage)] = usage

    def advance(self, ok: bool, usage: Usage | None = None) -> None:
        """An item ended (its row is written); its usage moves from in flight to finished."""
        with self._lock:
            self.finished += 1
            self.done += 1
            self.errors += not ok
            if usage is not None:
                self._in_flight.pop(id(usage), None)
                self._finished_usage.add(usage)
        if self._bar is not None:
            self._bar.advance(self._task)

    def usage(self) -> Usage:
        """This run's calls so far: finished items plus the calls of items still in flight."""
        with self._lock:
            total = Usage()
            total.add(self._finished_usage)
            for u in self._in_flight.values():
                total.add(u)
            return total

    def stats(self) -> str:
        u = self.usage()
        rate = self.finished / max(1e-9, time.perf_counter() - self._started)
        failed = getattr(u, "failed_attempts", 0)
        return (f"{rate:.1f} it/s · {u.calls} calls ({u.cache_hits} cached"
                f"{f', {failed} failed attempts' if failed else ''}) · "
                f"{u.prompt_tokens + u.completion_tokens} tok · ${u.cost_usd:.4f} · {self.errors} err")

    def line(self) -> str:
        """The plain form: `items 40/100 · 3.1 it/s · 160 calls (0 cached) · ... · 0 err · 0:00:13`."""
        elapsed = int(time.perf_counter() - self._started)
        total = self.total or "?"
        return (f"items {self.done}/{total} · {self.stats()} · "
                f"{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}")

    def _print_line(self) -> None:
        print(self.line(), file=self._stream, flush=True)

    def _tick(self) -> None:
        while not self._stop.wait(self._every_s):
            self._print_line()

    def __enter__(self) -> "RunProgress":
        if self._bar is not None:
            self._bar.__enter__()
        elif self.enabled:
            self._ticker = threading.Thread(target=self._tick, name="stagewise-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)  # draws once more: the final counts
        elif self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._print_line()
