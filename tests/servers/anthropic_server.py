"""A scripted server speaking Anthropic's Messages API (POST /v1/messages), strict about its format.

It rejects what Anthropic rejects (a missing x-api-key, anthropic-version or max_tokens, fields the API
does not have such as `n` or `seed`, content blocks it does not know, images that are not base64), so a
test passing against it shows LiteLLM sent exactly that format. Answers and faults: answers.py, script.py.
LiteLLM: model="anthropic/claude-haiku-4-5", api_base="http://127.0.0.1:PORT".
"""
from __future__ import annotations

import asyncio
import json

from aiohttp import web

from answers import cut_at_stop, directives_in, reply, tokens
from script import Fault, Script, digest, run

FIELDS = {"model", "messages", "system", "max_tokens", "stop_sequences", "temperature", "top_p", "top_k",
          "stream", "metadata", "tools", "tool_choice", "thinking", "service_tier"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 429: "rate_limit_error", 529: "overloaded_error"}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    kind = ERROR_TYPES.get(status, "api_error")
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status,
                             headers=headers)


def _texts(content: str | list[dict]) -> list[str]:
    return [content] if isinstance(content, str) else [b["text"] for b in content if b.get("type") == "text"]


def _problem(body: dict, script: Script) -> str | None:
    """Why Anthropic would answer 400 to this body (None if it would not); counts valid images."""
    unknown = set(body) - FIELDS
    if unknown:
        return f"{sorted(unknown)[0]}: Extra inputs are not permitted"
    if not isinstance(body.get("max_tokens"), int) or not body.get("messages") or not body.get("model"):
        return "model, messages and max_tokens are required"
    for i, m in enumerate(body["messages"]):
        if m.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: must be user or assistant (system goes in `system`)"
        for block in [] if isinstance(m["content"], str) else m["content"]:
            if block.get("type") == "image":
                source = block.get("source") or {}
                if source.get("type") != "base64" or not script.image(source.get("media_type", ""),
                                                                       source.get("data", "")):
                    return f"messages.{i}: image source is not a valid base64 image"
            elif block.get("type") != "text":
                return f"messages.{i}: unknown content block type {block.get('type')!r}"
    return None


def make_app(script: Script) -> web.Application:
    async def messages(request: web.Request) -> web.Response:
        raw = await request.read()
        key, attempt = script.attempt(raw)
        body = json.loads(raw)
        api_key = request.headers.get("x-api-key")
        if not api_key or not request.headers.get("anthropic-version"):
            script.note(key, 401)
            return error(401, "x-api-key and anthropic-version headers are required")
        problem = _problem(body, script)
        if problem:
            script.note(key, 400, problem=problem)
            return error(400, problem)
        system = body.get("system") or []
        everything = "\n".join(_texts(system) + [t for m in body["messages"] for t in _texts(m["content"])])
        directives = directives_in(everything)
        fault = script.fault(directives, attempt)
        if fault:
            return _fault(script, key, fault, api_key)
        if script.latency_s:
            await asyncio.sleep(script.latency_s)
        messages_ = body["messages"]
        last_user = "\n".join(_texts(next(m for m in reversed(messages_) if m["role"] == "user")["content"]))
        prefix = "".join(_texts(messages_[-1]["content"])) if messages_[-1]["role"] == "assistant" else None
        stop = body.get("stop_sequences") or []
        prompt_key = digest([system, messages_, stop])
        q = script.sample(prompt_key)
        text, hit = cut_at_stop(reply(last_user, prefix, [], q, directives), stop)
        stop_reason = "stop_sequence" if hit else "end_turn"
        if tokens(text) > body["max_tokens"]:
            text, stop_reason, hit = text[: body["max_tokens"] * 4], "max_tokens", None
        usage = {"input_tokens": tokens(everything), "output_tokens": tokens(text)}
        script.note(key, 200, prompt=prompt_key, q=q, prefill=prefix is not None, **usage)
        return web.json_response({
            "id": f"msg_{key}", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{"type": "text", "text": text}], "stop_reason": stop_reason, "stop_sequence": hit,
            "usage": usage})

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    return app


def _fault(script: Script, key: str, fault: Fault, api_key: str) -> web.Response:
    script.note(key, fault.status, fault.name)
    if fault.name == "echo-auth":
        return error(401, f"invalid x-api-key: {api_key}")
    if fault.status == 429:
        return error(429, "Number of request tokens has exceeded your per-minute rate limit",
                     headers={"retry-after": str(script.retry_after_s)})
    if fault.status == 529:
        return error(529, "Overloaded")
    return error(fault.status, f"scripted {fault.name}")


if __name__ == "__main__":
    run(make_app, __doc__.splitlines()[0])
