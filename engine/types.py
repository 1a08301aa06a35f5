"""The values that cross the backend protocol: a request in, completions out.

Plain slotted dataclasses, not pydantic: these are built and read on the hot path, thousands of times a
second, and need no validation (they are made by our own code, never parsed from user input).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Request:
    """One chat request. `messages` are OpenAI chat messages; images are `image_url` parts with data URLs.

    `continue_final` asks the backend to continue the last (assistant) message rather than open a new
    one. `tags` are free labels for traces (stage, role, candidate); they never reach the provider and
    are not part of the cache key.
    """

    messages: list[dict[str, Any]]
    n: int = 1
    temperature: float = 0.6
    top_p: float = 0.9
    max_tokens: int = 2048
    stop: tuple[str, ...] = ()
    seed: int | None = None
    continue_final: bool = False
    logprobs: int = 0  # top alternatives per generated token to return (judge and check calls); 0: none
    tags: dict[str, Any] = field(default_factory=dict, compare=False)

    def sampling(self) -> dict[str, Any]:
        """The sampling parameters as a provider expects them (None values dropped)."""
        params: dict[str, Any] = {
            "n": self.n,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
        }
        if self.stop:
            params["stop"] = list(self.stop)
        if self.seed is not None:
            params["seed"] = self.seed
        return params


@dataclass(slots=True)
class Completion:
    """One sampled choice. Token counts and cost are per choice: a reply's totals are split over its n
    choices (prompt tokens are charged once, on the first choice), so summing completions sums the bill."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    # per generated token, when the request asked and the backend can: (token text, {alternative's
    # text: logprob} for the top alternatives); what a judge's verdict is read from (judges/logprobs.py)
    logprobs: list[tuple[str, dict[str, float]]] | None = None
    cached: bool = False


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do, so graphs ask this instead of checking backend types."""

    n_per_request: bool = True
    continue_assistant: bool = False
    logprobs: bool = False  # returns the top alternatives' logprobs of each token when a request asks
    images: bool = True


@runtime_checkable
class Backend(Protocol):
    """Anything that turns a request into `request.n` completions."""

    model: str
    capabilities: Capabilities

    async def complete(self, request: Request) -> list[Completion]: ...

    async def aclose(self) -> None: ...
