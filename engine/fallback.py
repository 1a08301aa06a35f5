"""Fallback models: a call the primary model cannot answer goes to the next model in line.

"Cannot answer" = its client gave up: after its own retries for a retryable error (rate limit, 5xx,
timeout, connection, unreadable reply), at once for one retrying cannot fix (a 4xx: bad key, unknown
model, a request that provider rejects), since another provider may well take it. Each model keeps its
own client (cache keys, limits, retries), so every attempt is traced under the model that made it, and
a result row's `answered_by` counts the completions each model gave for that item.

LiteLLM's own `fallbacks=` (and its Router) would hide all of this inside one call: the engine would see
one attempt, could not say which model answered, and would not apply its limits, cache and retry policy
to each model; nor would it cover the direct OpenAI-compatible path or the in-process backends.
"""
from __future__ import annotations

from collections import Counter
from contextvars import ContextVar
from typing import Any, Awaitable, Callable

from engine.client import Client
from engine.errors import CallError
from engine.types import Capabilities, Completion, Request

_answered_by: ContextVar[Counter[str] | None] = ContextVar("stagewise_answered_by", default=None)


class FallbackClient:
    """A primary client and its fallbacks, used by graphs exactly like a `Client`."""

    def __init__(self, clients: list[Client]):
        self.clients = clients
        self.model = clients[0].model
        self.tracer = clients[0].tracer
        caps = [c.capabilities for c in clients]
        # a request is built once, before we know who answers it: ask only what every model can do
        self.capabilities = Capabilities(n_per_request=all(c.n_per_request for c in caps),
                                         continue_assistant=all(c.continue_assistant for c in caps),
                                         logprobs=all(c.logprobs for c in caps),
                                         images=all(c.images for c in caps))

    async def complete(self, request: Request) -> list[Completion]:
        errors: list[CallError] = []
        for i, client in enumerate(self.clients):
            try:
                completions = await client.complete(request)
            except CallError as exc:
                errors.append(exc)
                if i + 1 < len(self.clients):
                    self.tracer.event("llm.fallback", **{**request.tags, "model": client.model,
                                      "fallback": self.clients[i + 1].model, "error": f"{exc.kind}: {exc}"})
                continue
            counts = _answered_by.get()
            if counts is not None:
                counts[client.model] += len(completions)
            return completions
        raise _all_failed(self.clients, errors)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


def _all_failed(clients: list[Client], errors: list[CallError]) -> CallError:
    """One error naming every model's failure; retryable if any was (a rerun may then succeed)."""
    kept = next((e for e in errors if e.retryable), errors[-1])
    message = "; ".join(f"{c.model}: {e.kind}: {e}" for c, e in zip(clients, errors))
    return type(kept)(f"every model failed: {message}", retry_after=kept.retry_after)


Solve = Callable[[Any, "str | None"], Awaitable[dict[str, Any]]]


def recording_answers(solve: Solve) -> Solve:
    """Wrap a graph's solve so its row says which models answered: {"answered_by": {model: completions}}."""
    async def solve_and_record(item: Any, image_url: str | None) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        token = _answered_by.set(counts)  # tasks the graph starts copy this context: same Counter
        try:
            result = await solve(item, image_url)
        finally:
            _answered_by.reset(token)
        return {**result, "answered_by": dict(counts)}

    return solve_and_record
