"""The one door every model call goes through: cache → limits → retries → backend, traced.

Graphs call `Client.complete(request)` and get `request.n` completions back. What they get is the same
whether it came from the cache, from one request with `n`, or from n single requests fanned out for a
backend that cannot sample n at once; samples the cache holds are never asked again.
"""
from __future__ import annotations

import asyncio
import dataclasses
import sys
import time

from engine.cache import Cache, request_key
from engine.errors import BadOutput, CallError, CallTimeout, RateLimited
from engine.limits import Limits
from engine.retry import RetryPolicy
from engine.trace import Tracer, Usage, current_span, messages_for_trace, new_span_id
from engine.types import Backend, Completion, Request

if sys.version_info >= (3, 11):
    _deadline = asyncio.timeout
else:  # pragma: no cover
    import async_timeout

    _deadline = async_timeout.timeout


class Client:
    def __init__(self, backend: Backend, *, tracer: Tracer, cache: Cache | None = None,
                 limits: Limits | None = None, retry: RetryPolicy = RetryPolicy()):
        self.backend = backend
        self.model = backend.model
        self.capabilities = backend.capabilities
        self.tracer = tracer
        self.cache = cache
        self.limits = limits or Limits()
        self.retry = retry
        self.usage = Usage()  # the whole run's totals, for progress and summary

    async def complete(self, request: Request) -> list[Completion]:
        key = request_key(self.model, request) if self.cache else ""
        cached = self.cache.get(key, request.n) if self.cache else [None] * request.n
        missing = [i for i, c in enumerate(cached) if c is None]
        for i, c in enumerate(cached):
            if c is not None:
                self._record(request, c, i, latency=0.0, attempt=0, status="ok", cache="hit")
        if not missing:
            return cached  # type: ignore[return-value]

        if len(missing) == request.n and (request.n == 1 or self.capabilities.n_per_request):
            fresh = dict(enumerate(await self._call(request)))
        else:
            fresh = await self._ask_for(key, request, _runs(missing, self.capabilities.n_per_request))
        if self.cache:
            self.cache.put(key, {i: c for i, c in fresh.items() if cached[i] is None})
        return [c if c is not None else fresh[i] for i, c in enumerate(cached)]

    async def _ask_for(self, key: str, request: Request, runs: list[range]) -> dict[int, Completion]:
        """Only the samples not cached: one request per run of them, its seed offset by the run's first
        sample the way vLLM and the hf backend seed sample i of n (seed + i), so a sample is the same
        whichever request asked for it. The first failure cancels the siblings still running (they would
        be billed and thrown away); those that finished go to the cache, so a rerun pays only for the rest."""
        tasks = {run: asyncio.ensure_future(self._call(dataclasses.replace(
                     request, n=len(run), seed=None if request.seed is None else request.seed + run.start),
                     sample=run.start, of_n=request.n))
                 for run in runs}
        try:
            await asyncio.gather(*tasks.values())
        except BaseException:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            finished = {run.start + j: c for run, t in tasks.items() if not t.cancelled() and t.exception() is None
                        for j, c in enumerate(t.result())}
            if self.cache and finished:
                self.cache.put(key, finished)
            raise
        return {run.start + j: c for run, t in tasks.items() for j, c in enumerate(t.result())}

    async def _call(self, request: Request, sample: int = 0, of_n: int | None = None) -> list[Completion]:
        """One logical call with its retries; each attempt is one trace event. `request` may ask for
        samples sample.. of a request for `of_n` (the cache held the others): the events say those."""
        of_n = of_n or request.n
        estimate = self.limits.estimate(_prompt_chars(request), request.n, request.max_tokens)
        for attempt in range(1, self.retry.max_attempts + 1):
            await self.limits.acquire(estimate)
            started = time.perf_counter()
            completions: list[Completion] | None = None
            error: CallError | None = None
            try:
                async with _deadline(self.retry.timeout_s):
                    completions = await self.backend.complete(request)
                if len(completions) != request.n:
                    raise BadOutput(f"asked for {request.n} choices, got {len(completions)}")
            except CallError as exc:
                error = exc
            except TimeoutError:
                error = CallTimeout(f"no reply within {self.retry.timeout_s:g} s")
            finally:
                tokens = sum(c.prompt_tokens + c.completion_tokens for c in completions or ())
                out_tokens = sum(c.completion_tokens for c in completions or ())
                self.limits.release(estimate, tokens if completions else None, out_tokens)
            latency = time.perf_counter() - started
            for usage in (self.usage, current_span.get().usage):
                usage.attempts += 1
                usage.failed_attempts += error is not None
            if error is None:
                self.limits.concurrency.on_success()
                for i, c in enumerate(completions):  # type: ignore[arg-type]
                    self._record(request, c, sample + i, latency, attempt, "ok", "miss", of_n)
                return completions  # type: ignore[return-value]
            if isinstance(error, RateLimited):
                self.limits.concurrency.on_rate_limited()
            final = not error.retryable or attempt == self.retry.max_attempts
            self._trace_failure(request, sample, latency, attempt, error, final, of_n)
            if final:
                raise error
            await asyncio.sleep(self.retry.delay(attempt, error.retry_after))
        raise AssertionError("unreachable")

    def _record(self, request: Request, c: Completion, index: int, latency: float, attempt: int,
                status: str, cache: str, of_n: int | None = None) -> None:
        paid = 0.0 if c.cached else c.cost_usd
        for usage in (self.usage, current_span.get().usage):
            usage.calls += 1  # one generation = one call, as docs/architecture.md's table counts them
            usage.cache_hits += c.cached
            usage.prompt_tokens += c.prompt_tokens
            usage.completion_tokens += c.completion_tokens
            usage.cost_usd += paid
            usage.cost_uncached_usd += c.cost_usd
        self.tracer.event("llm.call", span_id=new_span_id(), parent_id=current_span.get().span_id,
                          **{**request.tags, "candidate": request.tags.get("candidate", 0) + index},
                          model=self.model, n=of_n or request.n, sample=index, temperature=request.temperature,
                          prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
                          cost_usd=paid, latency_s=round(latency, 4), cache=cache, attempt=attempt,
                          status=status, error=None, finish_reason=c.finish_reason, text=c.text,
                          **self._messages(request))

    def _trace_failure(self, request: Request, sample: int, latency: float, attempt: int,
                       error: CallError, final: bool, of_n: int) -> None:
        self.tracer.event("llm.call", span_id=new_span_id(), parent_id=current_span.get().span_id,
                          **{**request.tags, "candidate": request.tags.get("candidate", 0) + sample},
                          model=self.model, n=of_n, sample=sample, temperature=request.temperature,
                          prompt_tokens=0,
                          completion_tokens=0, cost_usd=0.0, latency_s=round(latency, 4), cache="miss",
                          attempt=attempt, status="error" if final else "retry",
                          error=f"{error.kind}: {error}", **self._messages(request))

    def _messages(self, request: Request) -> dict[str, object]:
        """With --trace-prompts, the request's messages for its llm.call events; nothing otherwise."""
        return {"messages": messages_for_trace(request.messages)} if self.tracer.prompts else {}

    async def aclose(self) -> None:
        await self.backend.aclose()  # the cache may be shared between clients: its owner closes it


def _runs(samples: list[int], n_per_request: bool) -> list[range]:
    """Sorted sample indices as requests: each alone for a backend without `n`, else each run of
    consecutive indices together."""
    runs: list[range] = []
    for i in samples:
        if n_per_request and runs and runs[-1].stop == i:
            runs[-1] = range(runs[-1].start, i + 1)
        else:
            runs.append(range(i, i + 1))
    return runs


def _prompt_chars(request: Request) -> int:
    total = 0
    for m in request.messages:
        content = m.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p.get("text", "")) + (1000 if p.get("type") == "image_url" else 0)
                         for p in content)
    return total
