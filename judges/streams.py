"""Random decisions that do not depend on timing.

A search makes random choices (a knockout's draws, a bracket's seeding and pair orders, a tie-break
when a verdict cannot be read) while comparisons run concurrently. Drawn from one shared generator,
the numbers go to whichever comparison asks first, i.e. whichever reply arrived first, so the same
seed could pick different winners from one run to the next, or on a rerun served from the cache.
Here every decision gets its own generator, named by what it decides (seed, item, judge, candidates,
round, pair), never by how many draws came before it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Streams:
    """A family of generators under one `key`: `rng(*parts)` is the generator of one decision,
    `child(*parts)` a sub-family. The same key always gives the same numbers, in any process
    (a string seed is hashed with SHA-512, not with Python's randomized `hash`)."""

    key: str

    def child(self, *parts: object) -> "Streams":
        return Streams(":".join((self.key, *map(str, parts))))

    def rng(self, *parts: object) -> random.Random:
        return random.Random(self.child(*parts).key)
