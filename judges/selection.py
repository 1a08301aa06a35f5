"""Choosing one of N candidates with N-1 pairwise verdicts.

`knockout` is the reference's own: pop a random candidate, pop another, judge them, put the winner
back at the end of the pool. Its N-1 verdicts are strictly sequential. `bracket` makes the same
number of verdicts in ceil(log2 N) rounds whose comparisons run concurrently, so a stage costs
log2 N judge latencies instead of N-1. Its selection distribution differs from the knockout's (every
candidate plays at most ceil(log2 N) games), which is why traces record the mode.

Randomness comes from `Streams` (judges/streams.py): the knockout's draws are one sequential stream;
the bracket's seeding and each pair's order have their own, so no draw depends on when replies arrive.

`compare(a, b)` is the caller's judge: it returns `a` or `b`. With `valid` given, a comparison where
a side fails `valid(candidate)` is decided without calling `compare` (the valid side wins; if both
are invalid the second does, mirroring the reference's default), so a candidate missing its tags
loses instead of crashing the item. Without `valid` every pair goes to `compare`, as in the reference.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from judges.streams import Streams

Compare = Callable[[int, int], Awaitable[int]]
Valid = Callable[[Any], bool]


class Verdict(NamedTuple):
    """One decision: `pair` as judged (first, second) and the `winner` index."""

    pair: tuple[int, int]
    winner: int


@dataclass(frozen=True)
class Selection:
    """The `winner` index, every verdict in order, and which of them (positions in `verdicts`) were
    forfeits decided by `valid` without a judge call."""

    winner: int
    verdicts: list[Verdict]
    mode: str
    forfeits: list[int] = field(default_factory=list)
    rounds: int = 0

    @property
    def judge_calls(self) -> int:
        return len(self.verdicts) - len(self.forfeits)


def _forfeit(candidates: Sequence[Any], valid: Valid | None, a: int, b: int) -> int | None:
    if valid is None:
        return None
    ok_a, ok_b = bool(valid(candidates[a])), bool(valid(candidates[b]))
    if ok_a and ok_b:
        return None
    return a if ok_a and not ok_b else b


async def _decide(candidates: Sequence[Any], compare: Compare, valid: Valid | None,
                  a: int, b: int) -> tuple[int, bool]:
    forced = _forfeit(candidates, valid, a, b)
    if forced is not None:
        return forced, True
    winner = await compare(a, b)
    if winner not in (a, b):
        raise ValueError(f"compare({a}, {b}) returned {winner!r}; expected {a} or {b}")
    return winner, False


def _check(candidates: Sequence[Any]) -> None:
    if not len(candidates):
        raise ValueError("selection needs at least one candidate")


async def knockout(candidates: Sequence[Any], compare: Compare, streams: Streams, *,
                   valid: Valid | None = None) -> Selection:
    """The reference's random sequential knockout, reproducible from `streams`.

    While more than one remains: c1 = pool.pop(rng.randrange(len(pool))), c2 likewise; judge (c1, c2);
    append the winner to the pool. `rng` is `streams.rng("draws")`, this knockout's alone: its draws
    come one after another, between verdicts, in an order no timing can change. (The reference draws
    with unseeded np.random.randint; the draw procedure is the same, the generator is seedable.)
    """
    _check(candidates)
    rng = streams.rng("draws")
    pool = list(range(len(candidates)))
    verdicts: list[Verdict] = []
    forfeits: list[int] = []
    while len(pool) > 1:
        c1 = pool.pop(rng.randrange(len(pool)))
        c2 = pool.pop(rng.randrange(len(pool)))
        winner, forced = await _decide(candidates, compare, valid, c1, c2)
        if forced:
            forfeits.append(len(verdicts))
        verdicts.append(Verdict((c1, c2), winner))
        pool.append(winner)
    return Selection(pool[0], verdicts, "knockout", forfeits, rounds=len(verdicts))


async def bracket(candidates: Sequence[Any], compare: Compare, *, valid: Valid | None = None,
                  streams: Streams | None = None) -> Selection:
    """A single-elimination bracket: pairs (0,1), (2,3), ... judged concurrently each round; with an
    odd count the last one gets a bye and leads the next round (so no candidate gets two byes in a
    row). N-1 verdicts in ceil(log2 N) rounds, recorded round by round in pair order.

    With `streams`, the seeding and each pair's order are shuffled, so a judge's position bias (or the
    faithful rule's default to response 2) does not always favour the same slots. The seeding draws
    from `streams.rng("seeding")`, the order of round r's pair (a, b) from `streams.rng("order", r, a, b)`.
    """
    _check(candidates)
    pool = list(range(len(candidates)))
    if streams is not None:
        streams.rng("seeding").shuffle(pool)
    verdicts: list[Verdict] = []
    forfeits: list[int] = []
    rounds = 0
    while len(pool) > 1:
        pairs = [(pool[i], pool[i + 1]) for i in range(0, len(pool) - 1, 2)]
        if streams is not None:
            pairs = [(b, a) if streams.rng("order", rounds, a, b).random() < 0.5 else (a, b) for a, b in pairs]
        bye = [pool[-1]] if len(pool) % 2 else []
        results = await asyncio.gather(*(_decide(candidates, compare, valid, a, b) for a, b in pairs),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        winners = []
        for (a, b), (winner, forced) in zip(pairs, results):  # type: ignore[misc]
            if forced:
                forfeits.append(len(verdicts))
            verdicts.append(Verdict((a, b), winner))
            winners.append(winner)
        pool = bye + winners
        rounds += 1
    return Selection(pool[0], verdicts, "bracket", forfeits, rounds=rounds)
