"""Run a coroutine on the fastest event loop available: uvloop roughly halves asyncio's own per-call
cost (bench/throughput.py), and falls back to asyncio where it is not installed (Windows)."""
from __future__ import annotations

import asyncio
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
