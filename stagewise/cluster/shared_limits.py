"""An engine actor's Limits for one account: concurrency here, RPM/TPM booked at the cluster's limiter.

Drop-in for engine/limits.py's Limits (the Client cannot tell): `acquire` takes a local concurrency
slot, then, when the run has --rpm/--tpm, books the start at the limiter actor (stagewise/cluster/
limiter.py) and waits the seconds it answers. A 429 seen here is reported there; a 429 reported by any
other actor halves this actor's concurrency too.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from engine.limits import AdaptiveConcurrency, Limits

CHECK_EVERY_S = 0.5  # without caps, how often an actor asks whether another one saw a 429


class _SharedConcurrency(AdaptiveConcurrency):
    def __init__(self, maximum: int, owner: "ClusterLimits"):
        super().__init__(maximum)
        self._owner = owner

    def on_rate_limited(self) -> None:
        super().on_rate_limited()
        self._owner.report_rate_limited()


class ClusterLimits(Limits):
    def __init__(self, limiter: Any, account: tuple[str, str], concurrency: int, capped: bool):
        super().__init__(concurrency)  # no local pacers: the budgets live at the limiter
        self.concurrency = _SharedConcurrency(concurrency, self)
        self._limiter, self._account, self._capped = limiter, account, capped
        self._cuts_seen: int | None = None  # None until the first answer: earlier 429s are history
        self._checked = 0.0
        self._pending: set[asyncio.Future[Any]] = set()

    async def acquire(self, estimate: float) -> None:
        await self.concurrency.acquire()
        try:
            if self._capped:
                wait, cuts, booked_until = await self._limiter.reserve.remote(self._account, estimate)
                self._saw(cuts)
                if wait > 0:
                    try:
                        await asyncio.sleep(wait)
                    except asyncio.CancelledError:  # never sent
                        self._limiter.give_back.remote(self._account, estimate, booked_until)
                        raise
            elif time.monotonic() - self._checked > CHECK_EVERY_S:
                self._checked = time.monotonic()
                self._watch(self._limiter.cuts.remote(self._account))
        except BaseException:
            self.concurrency.release()
            raise

    def release(self, estimate: float, actual_tokens: int | None, completion_tokens: int | None) -> None:
        super().release(estimate, actual_tokens, completion_tokens)
        if self._capped:
            self._limiter.correct.remote(self._account, estimate, estimate if actual_tokens is None else actual_tokens)

    def report_rate_limited(self) -> None:
        self._watch(self._limiter.rate_limited.remote(self._account), own=True)

    def _watch(self, ref: Any, own: bool = False) -> None:
        """Read a 429 count without making the call wait for it."""
        fut = asyncio.ensure_future(_awaited(ref))
        self._pending.add(fut)

        def done(f: asyncio.Future[Any]) -> None:
            self._pending.discard(f)
            if not f.cancelled() and f.exception() is None:
                self._saw(f.result(), own)

        fut.add_done_callback(done)

    def _saw(self, cuts: int, own: bool = False) -> None:
        if self._cuts_seen is not None and cuts > self._cuts_seen and not own:
            AdaptiveConcurrency.on_rate_limited(self.concurrency)  # another actor's 429: slow down here too
        self._cuts_seen = max(cuts, self._cuts_seen or 0)


async def _awaited(ref: Any) -> Any:
    return await ref
