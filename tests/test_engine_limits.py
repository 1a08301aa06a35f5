"""The limiter's rules: a cap that is never exceeded, halves on 429 and grows back; token budgets."""
from __future__ import annotations

import asyncio

from engine.limits import AdaptiveConcurrency, Limits, TokenBucket


async def test_cap_is_never_exceeded_and_waiters_are_served_in_order():
    cap = AdaptiveConcurrency(2)
    order: list[int] = []
    peak = 0

    async def task(i: int) -> None:
        nonlocal peak
        await cap.acquire()
        peak = max(peak, cap.in_flight)
        order.append(i)
        await asyncio.sleep(0)
        cap.release()

    await asyncio.gather(*(task(i) for i in range(10)))
    assert peak == 2 and order == list(range(10)) and cap.in_flight == 0


async def test_rate_limit_halves_the_cap_once_per_burst_then_it_grows_back():
    cap = AdaptiveConcurrency(16)
    cap.on_rate_limited()
    cap.on_rate_limited()  # the same burst: no second cut
    assert cap.limit == 8
    for _ in range(200):
        cap.on_success()
    assert cap.limit == 16


async def test_a_cancelled_waiter_gives_its_slot_back():
    cap = AdaptiveConcurrency(1)
    await cap.acquire()
    waiter = asyncio.create_task(cap.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    cap.release()
    await asyncio.gather(waiter, return_exceptions=True)
    await asyncio.wait_for(cap.acquire(), 1)  # the slot is free again
    assert cap.in_flight == 1


async def test_token_bucket_reserves_then_corrects():
    bucket = TokenBucket(per_minute=1000)
    await bucket.take(600)
    assert bucket.tokens <= 400.5
    bucket.correct(reserved=600, actual=100)  # the reply was smaller than the estimate
    assert 899 <= bucket.tokens <= 1000


async def test_limits_estimate_learns_completion_length():
    limits = Limits(concurrency=4, tpm=10_000)
    first = limits.estimate(prompt_chars=400, n=2, max_tokens=2048)
    for _ in range(50):
        await limits.acquire(first)
        limits.release(first, actual_tokens=120, completion_tokens=20)
    assert limits.estimate(prompt_chars=400, n=2, max_tokens=2048) < first
