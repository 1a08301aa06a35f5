"""The limiter's rules: a cap that is never exceeded, halves on 429 and grows back; paced budgets;
accounts. (The budgets measured at a real server: tests/test_rate_limits.py.)"""
from __future__ import annotations

import asyncio

import pytest

from engine.limits import AdaptiveConcurrency, Limits, Pacer, account_key


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
    cap.release()  # pops the cancelled waiter's future before the waiter has run its except branch
    with pytest.raises(asyncio.CancelledError):  # cancellation stays cancellation (not a ValueError)
        await waiter
    await asyncio.wait_for(cap.acquire(), 1)  # the slot is free again
    assert cap.in_flight == 1


def test_pacer_spaces_starts_by_cost_and_never_bursts():
    pacer = Pacer(per_minute=60)  # one unit a second
    waits = [pacer.reserve(1) for _ in range(4)]
    assert waits == pytest.approx([0, 1, 2, 3], abs=0.05)
    assert pacer.reserve(3) == pytest.approx(4, abs=0.05)
    assert pacer.reserve(1) == pytest.approx(7, abs=0.05)


def test_pacer_settles_the_real_cost():
    pacer = Pacer(per_minute=600)  # ten units a second
    assert pacer.reserve(6) == pytest.approx(0, abs=0.05)
    pacer.correct(reserved=6, actual=1)  # the reply was smaller than the estimate
    assert pacer.reserve(1) == pytest.approx(0.1, abs=0.05)
    pacer.correct(reserved=1, actual=11)  # ... and this one larger
    assert pacer.reserve(1) == pytest.approx(1.2, abs=0.05)


async def test_a_cancelled_booking_with_later_ones_is_not_given_back():
    pacer = Pacer(per_minute=60)  # one start a second
    a, b, c = (asyncio.create_task(pacer.take(1)) for _ in range(3))  # booked for 0, 1 and 2 s
    await asyncio.sleep(0)
    b.cancel()  # C is already spaced after B: giving B's second back would put D next to C
    with pytest.raises(asyncio.CancelledError):
        await b
    assert pacer.reserve(1) == pytest.approx(3, abs=0.05)
    c.cancel()
    await asyncio.gather(a, c, return_exceptions=True)


def test_the_cluster_limiter_gives_a_booking_back_only_while_it_is_the_last():
    from stagewise.cluster.limiter import AccountLimiter

    limiter, account = AccountLimiter(rpm=None, tpm=60), ("openai", "")  # one token a second
    bookings = [limiter.reserve(account, 1)[2] for _ in range(3)]  # booked for 0, 1 and 2 s
    limiter.give_back(account, 1, bookings[1])  # never sent, but the third is spaced after it: kept
    wait, _, last = limiter.reserve(account, 1)
    assert wait == pytest.approx(3, abs=0.05)
    limiter.give_back(account, 1, last)  # the last booking: it goes back
    assert limiter.reserve(account, 1)[0] == pytest.approx(3, abs=0.05)


async def test_a_cancelled_paced_call_gives_its_booking_and_slot_back():
    limits = Limits(concurrency=1, rpm=60)
    await limits.acquire(0)
    limits.release(0, None, None)
    waiter = asyncio.create_task(limits.acquire(0))  # paced: waits ~1 s holding the only slot
    await asyncio.sleep(0.05)
    assert limits.concurrency.in_flight == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limits.concurrency.in_flight == 0
    assert limits.rpm.reserve(1) == pytest.approx(0.95, abs=0.05)  # the booking went back


def test_an_account_is_a_provider_and_its_base():
    gen = account_key("hosted_vllm/gen", "http://127.0.0.1:8000/v1")
    assert account_key("hosted_vllm/judge", "http://127.0.0.1:8000/v1/") == gen
    assert account_key("hosted_vllm/judge", "http://127.0.0.1:8001/v1") != gen
    assert account_key("openai/gpt-4o", None) == account_key("gpt-4o-mini", None) == ("openai", "")
    assert account_key("anthropic/claude", None) != account_key("openai/gpt-4o", None)
    assert account_key("hf:/m/a", None) != account_key("hf:/m/b", None)


async def test_limits_estimate_learns_completion_length():
    limits = Limits(concurrency=4, tpm=100_000_000)
    first = limits.estimate(prompt_chars=400, n=2, max_tokens=2048)
    for _ in range(50):
        await limits.acquire(first)
        limits.release(first, actual_tokens=120, completion_tokens=20)
    assert limits.estimate(prompt_chars=400, n=2, max_tokens=2048) < first
