"""Limits around a backend: an adaptive concurrency cap, requests and tokens per minute.

On a 429 the cap halves and then creeps back one slot per window of successes (AIMD, as TCP does),
so a rate-limited run slows down instead of stopping for a fixed pause.
"""
from __future__ import annotations

import asyncio
import collections
import time

from asyncio_throttle import Throttler


class AdaptiveConcurrency:
    """A semaphore whose size moves between 1 and `maximum`. The fast path never awaits."""

    def __init__(self, maximum: int):
        self.maximum = max(1, maximum)
        self.limit = float(self.maximum)
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._last_cut = 0.0

    async def acquire(self) -> None:
        if self.in_flight < int(self.limit) and not self._waiters:
            self.in_flight += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # we were granted a slot just as we were cancelled
            elif fut in self._waiters:  # `_wake` may already have popped (and skipped) our future
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < int(self.limit):
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    def on_success(self) -> None:
        if self.limit < self.maximum:
            self.limit = min(self.maximum, self.limit + 1.0 / self.limit)
            self._wake()

    def on_rate_limited(self) -> None:
        now = time.monotonic()
        if now - self._last_cut > 1.0:  # one burst of 429s is one signal, not twenty
            self.limit = max(1.0, self.limit / 2)
            self._last_cut = now


class TokenBucket:
    """Tokens per minute. A call reserves its estimate up front; the reply corrects the balance."""

    def __init__(self, per_minute: int):
        self.capacity = float(per_minute)
        self.tokens = float(per_minute)
        self.rate = per_minute / 60.0
        self._stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, amount: float) -> None:
        amount = min(amount, self.capacity)
        while True:
            self._refill()
            if self.tokens >= amount:
                self.tokens -= amount
                return
            await asyncio.sleep((amount - self.tokens) / self.rate)

    def correct(self, reserved: float, actual: float) -> None:
        self._refill()
        self.tokens = min(self.capacity, self.tokens + reserved - actual)


class Limits:
    """Everything a call waits for before it may go out."""

    def __init__(self, concurrency: int = 64, rpm: int | None = None, tpm: int | None = None):
        self.concurrency = AdaptiveConcurrency(concurrency)
        self.rpm = Throttler(rate_limit=rpm, period=60.0) if rpm else None
        self.tpm = TokenBucket(tpm) if tpm else None
        self._completion_avg = 256.0  # moving average of completion tokens, for TPM estimates

    def estimate(self, prompt_chars: int, n: int, max_tokens: int) -> float:
        return prompt_chars / 4 + n * min(max_tokens, self._completion_avg)

    async def acquire(self, estimate: float) -> None:
        if self.rpm is not None:
            await self.rpm.acquire()
        if self.tpm is not None:
            await self.tpm.take(estimate)
        await self.concurrency.acquire()

    def release(self, estimate: float, actual_tokens: int | None, completion_tokens: int | None) -> None:
        self.concurrency.release()
        if self.tpm is not None:
            self.tpm.correct(estimate, estimate if actual_tokens is None else actual_tokens)
        if completion_tokens:
            self._completion_avg = 0.9 * self._completion_avg + 0.1 * completion_tokens
