"""Limits per provider account for a whole Ray cluster: one limiter actor books every request.

A provider counts an account's requests wherever they come from, so `--rpm`/`--tpm` cannot be split
per actor (an actor idle at the end would waste its share; K actors each at rpm/K still burst
together). Every engine actor asks this one actor for a start time instead: it holds the account's
Pacers (engine/limits.py, the same steady pacing as one process) and answers with the seconds to
wait, so the cluster's starts are spaced as one process's would be. A booking is one actor call:
1.3 ms one at a time, and the actor books ~1,300 requests a second (80,000 RPM) on a loaded 2-core
machine (bench/scale.py), above most accounts' caps; leasing slots in batches would raise that
ceiling at the cost of bursts, so it is not done.

A 429 anywhere is counted here once a second per account (`rate_limited`); every actor reads the
count with its bookings, or every half second without caps, and halves its own concurrency on a new
one, so one actor's 429 slows them all. Concurrency itself stays per actor (`--concurrency`).
"""
from __future__ import annotations

import time
from collections import Counter

from engine.limits import Pacer

Account = tuple[str, str]


class AccountLimiter:
    """Run as a Ray actor (sync: its calls are served one at a time, so bookings never race)."""

    def __init__(self, rpm: int | None, tpm: int | None):
        self._caps = (rpm, tpm)
        self._pacers: dict[Account, tuple[Pacer | None, Pacer | None]] = {}
        self._cuts: Counter[Account] = Counter()
        self._last_cut: dict[Account, float] = {}
        self._members: list[tuple[int, int]] = []  # (index, pid) per engine actor that joined

    def join(self, pid: int) -> int:
        """An engine actor starts (or restarts): its index, which picks its --api-base among several."""
        self._members.append((len(self._members), pid))
        return self._members[-1][0]

    def members(self) -> list[tuple[int, int]]:
        return list(self._members)

    def _of(self, account: Account) -> tuple[Pacer | None, Pacer | None]:
        if account not in self._pacers:
            rpm, tpm = self._caps
            self._pacers[account] = (Pacer(rpm) if rpm else None, Pacer(tpm) if tpm else None)
        return self._pacers[account]

    def reserve(self, account: Account, tokens: float) -> tuple[float, int, float | None]:
        """Book one request of about `tokens` tokens: (seconds to wait, the account's 429 count, the token
        booking's end for `give_back`). Tokens first, then the request slot after that wait, as
        Limits.acquire does in one process."""
        rpm, tpm = self._of(account)
        wait = tpm.reserve(tokens) if tpm else 0.0
        booked_until = tpm.booked_until if tpm else None
        if rpm:
            wait = rpm.reserve(1.0, after_s=wait)
        return wait, self._cuts[account], booked_until

    def correct(self, account: Account, reserved: float, actual: float) -> None:
        """The request cost `actual` tokens, not `reserved`."""
        tpm = self._of(account)[1]
        if tpm:
            tpm.correct(reserved, actual)

    def give_back(self, account: Account, reserved: float, booked_until: float | None) -> None:
        """A request never sent: its tokens go back only while no later booking was spaced after them
        (Pacer.give_back)."""
        tpm = self._of(account)[1]
        if tpm and booked_until is not None:
            tpm.give_back(reserved, booked_until)

    def rate_limited(self, account: Account) -> int:
        now = time.monotonic()
        if now - self._last_cut.get(account, 0.0) > 1.0:  # one burst of 429s is one signal
            self._cuts[account] += 1
            self._last_cut[account] = now
        return self._cuts[account]

    def cuts(self, account: Account) -> int:
        return self._cuts[account]
