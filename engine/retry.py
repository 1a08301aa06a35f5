"""When and how long to wait before trying a failed call again."""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    timeout_s: float = 120.0
    base_delay_s: float = 0.5
    max_delay_s: float = 60.0
    max_retry_after_s: float = 60.0  # a provider asking for an hour's pause must not stall the run

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential back-off with full jitter; never sooner than the provider's Retry-After, which
        is honoured up to `max_retry_after_s`."""
        backoff = random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))
        return max(backoff, min(retry_after or 0.0, self.max_retry_after_s))
