"""Limits around a provider account: an adaptive concurrency cap, requests and tokens per minute.

On a 429 the cap halves and then creeps back one slot per window of successes (AIMD, as TCP does),
so a rate-limited run slows down instead of stopping for a fixed pause. Requests and tokens are paced
at a steady rate (docs/limits.md): a minute's budget is never let out in one burst, and no window of
W seconds sees more than rpm·W/60 requests (rounded up).
"""
from __future__ import annotations

import asyncio
import collections
import time


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


class Pacer:
    """Spends a budget of `per_minute` units at a steady per_minute/60 a second, with no burst.

    Each `take(cost)` is given the earliest start at which everything taken before it has been paid
    for, so starts are spaced cost/rate apart whatever the concurrency. A reservation is a time, not a
    polling loop (asyncio-throttle's sliding log lets a whole minute out at once and polls every
    10 ms). `correct` settles the difference once the real cost is known; unused budget is never
    banked, so a quiet minute does not buy a burst later.
    """

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self._free_at = 0.0  # monotonic time at which everything taken so far is paid for

    def reserve(self, cost: float, after_s: float = 0.0) -> float:
        """Book `cost` units, to be spent no sooner than `after_s` from now (another budget's wait);
        the seconds to wait before spending them."""
        now = time.monotonic()
        start = max(now + after_s, self._free_at)
        self._free_at = start + cost / self.rate
        return start - now

    @property
    def booked_until(self) -> float:
        """The end of the latest booking: what `give_back` compares to know a booking is still the last."""
        return self._free_at

    async def take(self, cost: float = 1.0) -> float:
        """Wait for `cost` units; returns the booking's end, for `give_back`."""
        wait = self.reserve(cost)
        booked_until = self.booked_until
        if wait > 0:
            try:
                await asyncio.sleep(wait)
            except asyncio.CancelledError:
                self.give_back(cost, booked_until)
                raise
        return booked_until

    def give_back(self, cost: float, booked_until: float) -> None:
        """A booking never spent (its call was cancelled) is returned only while it is the last one:
        later bookings were spaced after it, and pulling the free time back under them would let the
        next call start too soon after them."""
        if self._free_at == booked_until:
            self._free_at -= cost / self.rate

    def correct(self, reserved: float, actual: float) -> None:
        """The call cost `actual`, not `reserved`: move the next free start by the difference."""
        self._free_at += (actual - reserved) / self.rate


class Limits:
    """Everything a call waits for before it may go out. One per provider account (`account_key`):
    clients that share an account share one Limits, so its caps hold for all their calls together."""

    def __init__(self, concurrency: int = 64, rpm: int | None = None, tpm: int | None = None):
        self.concurrency = AdaptiveConcurrency(concurrency)
        self.rpm = Pacer(rpm) if rpm else None
        self.tpm = Pacer(tpm) if tpm else None
        self._completion_avg = 256.0  # moving average of completion tokens, for TPM estimates

    def estimate(self, prompt_chars: int, n: int, max_tokens: int) -> float:
        return prompt_chars / 4 + n * min(max_tokens, self._completion_avg)

    async def acquire(self, estimate: float) -> None:
        """A concurrency slot first, then the budgets: the paced start is then the moment the request
        goes out, not a moment before a wait for a slot that would let paced starts bunch up."""
        await self.concurrency.acquire()
        tokens_booked = None
        try:
            if self.tpm is not None:
                tokens_booked = await self.tpm.take(estimate)
            if self.rpm is not None:
                await self.rpm.take(1.0)
        except BaseException:
            self.concurrency.release()
            if tokens_booked is not None:
                self.tpm.give_back(estimate, tokens_booked)  # type: ignore[union-attr]
            raise

    def release(self, estimate: float, actual_tokens: int | None, completion_tokens: int | None) -> None:
        self.concurrency.release()
        if self.tpm is not None:
            self.tpm.correct(estimate, estimate if actual_tokens is None else actual_tokens)
        if completion_tokens:
            self._completion_avg = 0.9 * self._completion_avg + 0.1 * completion_tokens


def account_key(model: str, api_base: str | None) -> tuple[str, str]:
    """Which provider account a model's calls are billed and rate-limited on: its provider prefix
    (`openai/gpt-4o` → openai; in-process `hf:`/`vllm:` models are each their own) and its API base.
    Keys come from the provider's environment variable, so the same provider and base is the same
    account. Holds nothing secret."""
    scheme, sep, _ = model.partition(":")
    if sep and "/" not in scheme:
        return model, ""
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    return provider, (api_base or "").rstrip("/")
