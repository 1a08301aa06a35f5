"""judges/selection.py: the reference's seeded knockout and the parallel bracket."""
from __future__ import annotations

import asyncio
import math
import random

import pytest

from judges.selection import Verdict, bracket, knockout
from judges.streams import Streams


def better_wins(quality, log=None):
    """A judge that always prefers the higher-quality candidate."""
    async def compare(a, b):
        if log is not None:
            log.append((a, b))
        await asyncio.sleep(0)
        return a if quality[a] >= quality[b] else b
    return compare


def reference_knockout_order(n, seed):
    """The reference loop, written out independently: pop random c1, pop random c2, re-pool winner
    (here: the lower index wins, so the order of pops alone is tested)."""
    rng, pool, pairs = Streams(str(seed)).rng("draws"), list(range(n)), []
    while len(pool) > 1:
        c1 = pool.pop(rng.randrange(len(pool)))
        c2 = pool.pop(rng.randrange(len(pool)))
        pairs.append((c1, c2))
        pool.append(min(c1, c2))
    return pairs


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 10])
async def test_knockout_makes_n_minus_1_verdicts_and_finds_the_best(n):
    quality = random.Random(n).sample(range(100), n)
    sel = await knockout(list("x" * n), better_wins(quality), Streams("7"))
    assert len(sel.verdicts) == n - 1 and sel.judge_calls == n - 1
    assert sel.winner == max(range(n), key=quality.__getitem__)
    assert sel.mode == "knockout" and sel.forfeits == []


async def test_knockout_follows_reference_pop_order():
    async def lower(a, b):
        return min(a, b)
    sel = await knockout([None] * 6, lower, Streams("3"))
    assert [v.pair for v in sel.verdicts] == reference_knockout_order(6, 3)


async def test_knockout_same_seed_same_verdict_sequence():
    quality = [3, 9, 1, 7, 5, 2, 8, 4]
    runs = [await knockout(quality, better_wins(quality), Streams("42")) for _ in range(3)]
    assert runs[0].verdicts == runs[1].verdicts == runs[2].verdicts
    other = await knockout(quality, better_wins(quality), Streams("43"))
    assert other.verdicts != runs[0].verdicts


@pytest.mark.parametrize("select", ["knockout", "bracket"])
@pytest.mark.parametrize("seed", range(6))
async def test_each_verdict_pairs_two_candidates_still_in_play(select, seed):
    """Replay the verdicts: each pairs two candidates nobody has beaten yet, its loser is out, and the
    one left standing is the selection's winner (the best one, under a judge that prefers quality)."""
    n = 7
    quality = random.Random(seed).sample(range(100), n)
    streams = Streams(str(seed))
    sel = await (knockout(quality, better_wins(quality), streams) if select == "knockout"
                 else bracket(quality, better_wins(quality), streams=streams))
    alive = set(range(n))
    for (a, b), winner in sel.verdicts:
        assert a != b and {a, b} <= alive, f"{(a, b)} judged when only {sorted(alive)} remain"
        alive.discard(b if winner == a else a)
    assert alive == {sel.winner} == {max(range(n), key=quality.__getitem__)}


async def test_knockout_is_sequential():
    running, peak = 0, 0

    async def compare(a, b):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        return a
    await knockout(list(range(8)), compare, Streams("0"))
    assert peak == 1


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 10, 16])
async def test_bracket_n_minus_1_verdicts_in_log2_rounds(n):
    quality = random.Random(n).sample(range(100), n)
    sel = await bracket(list(range(n)), better_wins(quality))
    assert len(sel.verdicts) == n - 1
    assert sel.rounds == (math.ceil(math.log2(n)) if n > 1 else 0)
    assert sel.winner == max(range(n), key=quality.__getitem__)
    assert sel.mode == "bracket"


async def test_bracket_rounds_run_concurrently():
    started = []
    gate = asyncio.Event()

    async def compare(a, b):
        started.append((a, b))
        if len(started) == 4:
            gate.set()
        await asyncio.wait_for(gate.wait(), 1)  # deadlocks unless the 4 first-round pairs overlap
        return a
    sel = await bracket(list(range(8)), compare)
    assert started[:4] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert sel.rounds == 3


async def test_bracket_bye_leads_next_round_and_verdicts_in_round_order():
    async def lower(a, b):
        return min(a, b)
    sel = await bracket(list(range(5)), lower)
    assert sel.verdicts == [Verdict((0, 1), 0), Verdict((2, 3), 2),   # round 1, 4 has a bye
                            Verdict((4, 0), 0),                        # round 2, 2 has a bye
                            Verdict((2, 0), 0)]                        # final
    assert sel.winner == 0


async def test_bracket_with_rng_shuffles_seeding_reproducibly():
    async def second(a, b):
        return b
    a = await bracket(list(range(8)), second, streams=Streams("5"))
    b = await bracket(list(range(8)), second, streams=Streams("5"))
    plain = await bracket(list(range(8)), second)
    assert a.verdicts == b.verdicts and a.verdicts != plain.verdicts


@pytest.mark.parametrize("select", ["knockout", "bracket"])
async def test_invalid_candidates_lose_without_a_judge_call(select):
    candidates = ["ok0", None, "ok2", "<SUMMARY>unclosed", "ok4"]
    valid = lambda c: c is not None and c.startswith("ok")  # noqa: E731
    calls = []

    async def compare(a, b):
        calls.append((a, b))
        assert valid(candidates[a]) and valid(candidates[b])
        return max(a, b)

    if select == "knockout":
        sel = await knockout(candidates, compare, Streams("0"), valid=valid)
    else:
        sel = await bracket(candidates, compare, valid=valid)
    assert sel.winner == 4
    assert len(sel.verdicts) == 4
    assert sel.judge_calls == len(calls) == 4 - len(sel.forfeits)
    for i in sel.forfeits:
        v = sel.verdicts[i]
        assert valid(candidates[v.winner]) or not any(valid(candidates[x]) for x in v.pair)


async def test_both_invalid_second_wins_like_the_reference_default():
    async def never(a, b):
        raise AssertionError("judge called")
    sel = await bracket([None, None], never, valid=lambda c: c is not None)
    assert sel.winner == 1 and sel.forfeits == [0] and sel.judge_calls == 0


async def test_without_valid_every_pair_goes_to_the_judge():
    calls = []

    async def compare(a, b):
        calls.append((a, b))
        return a
    await knockout([None, None, None], compare, Streams("0"))
    assert len(calls) == 2


@pytest.mark.parametrize("select", ["knockout", "bracket"])
async def test_compare_must_return_one_of_the_pair(select):
    async def bad(a, b):
        return 99
    with pytest.raises(ValueError, match="returned 99"):
        if select == "knockout":
            await knockout([1, 2], bad, Streams("0"))
        else:
            await bracket([1, 2], bad)


async def test_judge_errors_propagate_and_empty_pool_is_rejected():
    async def boom(a, b):
        raise RuntimeError("backend down")
    with pytest.raises(RuntimeError, match="backend down"):
        await bracket([1, 2, 3, 4], boom)
    with pytest.raises(ValueError):
        await knockout([], boom, Streams("0"))
