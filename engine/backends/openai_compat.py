"""Direct aiohttp path to OpenAI-compatible endpoints (vLLM, OpenAI, any /v1/chat/completions).

Why not LiteLLM here: its per-call overhead caps a 2-core client near ~117 calls/s where a bare
aiohttp client reaches ~2,500 (README, performance). LiteLLM stays the route for every other
provider and is still where our prices come from.
"""
from __future__ import annotations

import email.utils
import time
from typing import Any

import aiohttp
import orjson

from engine import pricing
from engine.errors import BadOutput, BadRequest, ConnectionFailed, RateLimited, ServerError
from engine.secrets import redact
from engine.types import Capabilities, Completion, Request


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date; None for anything else (a "1s" must not
    turn a retried 429 into an error of its own)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (ValueError, TypeError):
        return None
    return None if parsed is None else max(0.0, parsed.timestamp() - time.time())


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def token_logprobs(logprobs: Any) -> list[tuple[str, dict[str, float]]] | None:
    """A choice's OpenAI-format `logprobs` ({"content": [{token, logprob, top_logprobs: [{token,
    logprob}]}]}, as dicts or as LiteLLM's objects) as (token, {alternative: logprob}) per token."""
    content = _get(logprobs, "content") if logprobs is not None else None
    if not content:
        return None
    out = []
    for entry in content:
        top: dict[str, float] = {}
        for alt in _get(entry, "top_logprobs") or ():
            token, lp = _get(alt, "token"), _get(alt, "logprob")
            if isinstance(token, str) and isinstance(lp, (int, float)):
                top[token] = max(top.get(token, float("-inf")), float(lp))
        token, lp = _get(entry, "token"), _get(entry, "logprob")
        if isinstance(token, str) and isinstance(lp, (int, float)) and token not in top:
            top[token] = float(lp)
        out.append((token if isinstance(token, str) else "", top))
    return out


def split_usage(choices: list[dict[str, Any]], usage: dict[str, Any], model: str) -> list[Completion]:
    """Spread a reply's usage over its choices so that summing completions sums the bill."""
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    n = max(1, len(choices))
    out = []
    for i, choice in enumerate(sorted(choices, key=lambda c: c.get("index", 0))):
        message = choice.get("message") or {}
        text = message.get("content")
        if text is None:
            text = choice.get("text")
        if not isinstance(text, str):
            raise BadOutput(f"choice {i} has no text content")
        p = prompt if i == 0 else 0
        c = completion // n + (completion % n if i == 0 else 0)
        out.append(Completion(text=text, finish_reason=choice.get("finish_reason"), prompt_tokens=p,
                              completion_tokens=c, cost_usd=pricing.cost(model, p, c),
                              logprobs=token_logprobs(choice.get("logprobs"))))
    return out


class OpenAICompatBackend:
    """`model` is the full LiteLLM-style string (`hosted_vllm/tiny`); the part after the provider
    prefix is what the server is asked for."""

    def __init__(self, model: str, api_base: str, api_key: str | None = None,
                 continue_assistant: bool = False):
        self.model = model
        self.served_name = model.split("/", 1)[1] if "/" in model else model
        self.url = api_base.rstrip("/") + "/chat/completions"
        self.capabilities = Capabilities(n_per_request=True, continue_assistant=continue_assistant,
                                         logprobs=True, images=True)
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:  # made lazily: a session belongs to the running loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def complete(self, request: Request) -> list[Completion]:
        body: dict[str, Any] = {"model": self.served_name, "messages": request.messages,
                                **request.sampling()}
        if request.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = request.logprobs
        if request.continue_final:
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        try:
            async with self._get_session().post(self.url, data=orjson.dumps(body)) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
        except aiohttp.ClientError as exc:  # refused, reset, dropped mid-reply
            raise ConnectionFailed(f"connection failed: {type(exc).__name__}: {exc}") from None
        if status == 429:
            raise RateLimited(f"HTTP 429: {_snippet(raw)}", retry_after=retry_after)
        if status >= 500 or status == 408:
            raise ServerError(f"HTTP {status}: {_snippet(raw)}", retry_after=retry_after)
        if status >= 400:
            raise BadRequest(f"HTTP {status}: {_snippet(raw)}")
        try:
            data = orjson.loads(raw)
            choices = data["choices"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise BadOutput(f"malformed reply: {_snippet(raw)}") from None
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise BadOutput(f"malformed reply (choices): {_snippet(raw)}")  # retried, as any unreadable reply
        usage = data.get("usage")
        return split_usage(choices, usage if isinstance(usage, dict) else {}, self.model)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _snippet(raw: bytes) -> str:
    return redact(raw[:300].decode("utf-8", "replace")).replace("\n", " ")
