"""A scripted server speaking Gemini's generateContent (POST /v1beta/models/MODEL:generateContent).

Strict where Google is: the key comes in x-goog-api-key, unknown fields are "Invalid JSON payload"
(so an OpenAI `n`, `stop` or `max_tokens` leaking through fails), roles are user/model, images are
inline_data parts with base64 data. `candidate_count` candidates per request, `usageMetadata` token
counts, a 429 carries google.rpc.RetryInfo. Answers and faults: answers.py, script.py.
LiteLLM: model="gemini/gemini-2.5-flash", api_base="http://127.0.0.1:PORT/v1beta".
"""
from __future__ import annotations

import asyncio
import json

from aiohttp import web

from answers import cut_at_stop, directives_in, reply, tokens
from script import Fault, Script, digest, run

FIELDS = {"contents", "system_instruction", "systemInstruction", "generationConfig", "generation_config",
          "safetySettings", "tools", "toolConfig", "cachedContent", "labels"}
CONFIG = {"temperature", "top_p", "topP", "top_k", "topK", "candidate_count", "candidateCount",
          "max_output_tokens", "maxOutputTokens", "stop_sequences", "stopSequences", "seed",
          "response_mime_type", "responseMimeType", "presence_penalty", "presencePenalty",
          "frequency_penalty", "frequencyPenalty", "thinkingConfig", "response_schema", "responseSchema",
          "responseLogprobs", "logprobs"}
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


def error(code: int, message: str, details: list[dict] | None = None) -> web.Response:
    body = {"code": code, "message": message, "status": STATUS.get(code, "UNKNOWN")}
    if details:
        body["details"] = details
    return web.json_response({"error": body}, status=code)


def _either(d: dict, snake: str, camel: str, default=None):
    return d.get(snake, d.get(camel, default))


def _texts(parts: list[dict]) -> list[str]:
    return [p["text"] for p in parts if "text" in p]


def _problem(body: dict, script: Script) -> str | None:
    """Why Google would answer 400 to this body (None if it would not); counts valid images."""
    config = _either(body, "generationConfig", "generation_config", {})
    unknown = sorted(set(body) - FIELDS) + [f"generation_config.{k}" for k in sorted(set(config) - CONFIG)]
    if unknown:
        return f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
    if not body.get("contents"):
        return "* GenerateContentRequest.contents: contents is not specified"
    for i, c in enumerate(body["contents"]):
        if c.get("role") not in ("user", "model"):
            return f"contents[{i}].role must be user or model"
        for part in c.get("parts") or []:
            inline = _either(part, "inline_data", "inlineData")
            if inline is not None:
                if not script.image(_either(inline, "mime_type", "mimeType", ""), inline.get("data", "")):
                    return f"contents[{i}]: inline_data is not a valid base64 image"
            elif "text" not in part:
                return f"contents[{i}]: unsupported part {sorted(part)}"
    return None


def make_app(script: Script) -> web.Application:
    async def generate(request: web.Request) -> web.Response:
        model, _, method = request.match_info["target"].partition(":")
        if method != "generateContent":
            return error(404, f"method {method!r} not found")
        raw = await request.read()
        key, attempt = script.attempt(raw)
        body = json.loads(raw)
        api_key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not api_key:
            script.note(key, 403)
            return error(403, "Method doesn't allow unregistered callers. Please use API Key.")
        problem = _problem(body, script)
        if problem:
            script.note(key, 400, problem=problem)
            return error(400, problem)
        system = _texts(_either(body, "system_instruction", "systemInstruction", {}).get("parts", []))
        contents = body["contents"]
        everything = "\n".join(system + [t for c in contents for t in _texts(c["parts"])])
        directives = directives_in(everything)
        fault = script.fault(directives, attempt)
        if fault:
            return _fault(script, key, fault, api_key)
        if script.latency_s:
            await asyncio.sleep(script.latency_s)
        config = _either(body, "generationConfig", "generation_config", {})
        stop = _either(config, "stop_sequences", "stopSequences", [])
        max_tokens = _either(config, "max_output_tokens", "maxOutputTokens", 8192)
        last_user = "\n".join(_texts(next(c for c in reversed(contents) if c["role"] == "user")["parts"]))
        prefix = "".join(_texts(contents[-1]["parts"])) if contents[-1]["role"] == "model" else None
        prompt_key = digest([system, contents, stop])
        candidates, out_tokens, qs = [], 0, []
        for i in range(int(_either(config, "candidate_count", "candidateCount", 1))):
            qs.append(script.sample(prompt_key))
            text, _ = cut_at_stop(reply(last_user, prefix, [], qs[-1], directives), stop)
            reason = "STOP"
            if tokens(text) > max_tokens:
                text, reason = text[: max_tokens * 4], "MAX_TOKENS"
            out_tokens += tokens(text)
            candidates.append({"content": {"role": "model", "parts": [{"text": text}]},
                               "finishReason": reason, "index": i})
        usage = {"promptTokenCount": tokens(everything), "candidatesTokenCount": out_tokens}
        script.note(key, 200, prompt=prompt_key, q=qs[0] if len(qs) == 1 else qs,
                    input_tokens=usage["promptTokenCount"], output_tokens=out_tokens)
        return web.json_response({"candidates": candidates, "modelVersion": model,
                                  "usageMetadata": {**usage, "totalTokenCount": sum(usage.values())}})

    app = web.Application()
    app.router.add_post("/v1beta/models/{target}", generate)
    return app


def _fault(script: Script, key: str, fault: Fault, api_key: str) -> web.Response:
    status = 503 if fault.status == 529 else fault.status  # Gemini's "overloaded" is a 503
    if fault.name == "echo-auth":  # Google answers a bad key with 400 API_KEY_INVALID
        status = 400
    script.note(key, status, fault.name)
    if fault.name == "echo-auth":
        return error(400, f"API key not valid: {api_key}")
    if status == 429:
        return error(429, "Resource has been exhausted (e.g. check quota).", details=[
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{script.retry_after_s}s"}])
    if status == 503:
        return error(503, "The model is overloaded. Please try again later.")
    return error(status, f"scripted {fault.name}")


if __name__ == "__main__":
    run(make_app, __doc__.splitlines()[0])
