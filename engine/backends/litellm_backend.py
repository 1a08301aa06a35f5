"""Any provider LiteLLM knows, by model string (`openai/gpt-4o`, `groq/...`, `hosted_vllm/...`)."""
from __future__ import annotations

import os
import re
from typing import Any

from engine.errors import (BadOutput, BadRequest, CallError, CallTimeout, ConnectionFailed, RateLimited,
                           ServerError)
from engine.backends.openai_compat import retry_after_seconds, token_logprobs
from engine.secrets import redact
from engine.types import Capabilities, Completion, Request


def import_litellm():
    """Import LiteLLM quietly and offline-safe: its price map is read from the installed package."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    litellm.drop_params = True  # providers without `seed` or `n` get the request without them
    return litellm


class LiteLLMBackend:
    def __init__(self, model: str, api_base: str | None = None):
        self._litellm = import_litellm()
        self.model = model
        self.api_base = api_base
        provider = model.split("/", 1)[0]
        self.capabilities = Capabilities(
            n_per_request=provider in {"openai", "hosted_vllm", "azure", "together_ai", "fireworks_ai"},
            continue_assistant=provider in {"hosted_vllm", "anthropic"},
            logprobs=provider in {"openai", "hosted_vllm"},
            images=True)

    async def complete(self, request: Request) -> list[Completion]:
        kwargs: dict[str, Any] = {"model": self.model, "messages": request.messages,
                                  **request.sampling(), "num_retries": 0, "max_retries": 0}
        if self.api_base:
            kwargs["api_base"] = self.api_base
            if self.model.startswith("hosted_vllm/") and not os.environ.get("HOSTED_VLLM_API_KEY"):
                kwargs["api_key"] = "sk-none"
        if request.logprobs and self.capabilities.logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = request.logprobs
        if request.continue_final and self.model.startswith("hosted_vllm/"):
            kwargs["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False}
        try:
            response = await self._litellm.acompletion(**kwargs)
        except Exception as exc:  # LiteLLM raises its own hierarchy; map it onto ours
            raise _typed(exc) from None
        try:
            choices = response.choices
            usage = response.usage
            cost = float((getattr(response, "_hidden_params", None) or {}).get("response_cost") or 0.0)
        except AttributeError as exc:
            raise BadOutput(f"malformed reply: {exc}") from None
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        n = max(1, len(choices))
        out = []
        for i, choice in enumerate(choices):
            text = choice.message.content
            if not isinstance(text, str):
                raise BadOutput(f"choice {i} has no text content")
            c = completion // n + (completion % n if i == 0 else 0)
            out.append(Completion(text=text, finish_reason=choice.finish_reason,
                                  prompt_tokens=prompt if i == 0 else 0, completion_tokens=c,
                                  cost_usd=cost if i == 0 else 0.0,
                                  logprobs=token_logprobs(getattr(choice, "logprobs", None))))
        return out

    async def aclose(self) -> None:
        return None


def _typed(exc: Exception) -> CallError:
    message = redact(f"{type(exc).__name__}: {exc}")[:400]
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    if name == "RateLimitError" or status == 429:
        return RateLimited(message, retry_after=_retry_after(exc))
    if name in {"Timeout", "APITimeoutError"} or status == 408:
        return CallTimeout(message)
    if name == "APIConnectionError":
        return ConnectionFailed(message)
    if name in {"InternalServerError", "ServiceUnavailableError"} or (
            isinstance(status, int) and status >= 500):
        return ServerError(message)
    if name in {"JSONDecodeError", "APIResponseValidationError"}:
        return BadOutput(message)
    if isinstance(status, int) and 400 <= status < 500:
        return BadRequest(message)
    return ServerError(message)


def _retry_after(exc: Exception) -> float | None:
    """The provider's wait: Retry-After from the reply's headers (LiteLLM keeps them on
    `litellm_response_headers`; `exc.response` is a stand-in without them), else Google's RetryInfo."""
    for headers in (getattr(exc, "litellm_response_headers", None),
                    getattr(getattr(exc, "response", None), "headers", None)):
        value = headers.get("retry-after") if headers else None
        if value:
            return retry_after_seconds(value)
    delay = re.search(r'"retryDelay":\s*"(\d+(?:\.\d+)?)s"', str(exc))
    return float(delay.group(1)) if delay else None
