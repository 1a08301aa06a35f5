"""A scripted OpenAI-compatible server for tests and benches: fixed latency, faults on demand.

Run: python tests/fake_server.py --port 0 --latency-ms 50   (prints "PORT <n>" when listening)

Faults are asked for by directives in the request's text, so one run can mix them across items:
  [[429x2]]   answer 429 (Retry-After) to the first 2 attempts of this exact request
  [[500x1]] [[503x1]]  server errors for the first attempts
  [[hang]]    first attempt hangs for --hang-s seconds (past the client's timeout)
  [[drop]]    first attempt: the connection is closed with no reply
  [[badjson]] first attempt: malformed JSON;   [[badjson-always]]: every attempt
  [[nullchoices]] first attempt: valid JSON whose "choices" is null
  [[always500]]  never succeeds
  [[notags]]  the reply misses its closing tags
  [[slow:STAGE]] first request whose stop is </STAGE> waits until released (GET /release)
  [[answer:X]]   the conclusion answers X (default "A")
  [[same]] [[same:STAGE]]  every candidate of a request (of STAGE only, when named) has quality 0, so
                 the n candidates are the same text (a model that repeats itself)
  [[echo-auth]]  answer 401 quoting the Authorization header (a provider that echoes the key)
  [[jitter:MS]]  every request waits a random 0..MS ms first (unseeded), so replies arrive in a new order
  [[retry-after:S]]  the Retry-After header of scripted 429s (default 0.05)
  [[fail-seed:S]]    a request whose `seed` is S waits until GET /release, then answers 400 (a
                     fanned-out sample that fails when the test says so)
  [[slow-seed:S,T]]  requests with these seeds wait until the client disconnects (counted as
                     `disconnected` in /stats) or --hang-s passes
  [[answers-by-q:A,B,C,D]]  the candidate of quality q concludes the q-th of these (so some pairs are
                     decidable: one right, one wrong)
  [[judge-lower]]    the judge prefers the lower q (a judge that is always wrong)
  [[judge-always-2]] the judge writes "I choose response 2" whatever the pair; asked for logprobs
                     (`"logprobs": true`), the verdict token's top_logprobs carry its real preference
                     (P = 0.8 on the higher q's number, 0.2 on the other), as a position-biased judge
                     that still ranks the candidates
Every reply asked for logprobs carries OpenAI's choices[].logprobs.content (one entry a word, the
sampled word at logprob 0 unless scripted above).
Server flags: --check-fails-q Q  a reasoning pre-check answers "The reasoning is incorrect." when the
checked reasoning has quality Q ("reasoning q=Q"), else "correct" (so pre-checks decide some verdicts).
"Exact request" = same body, so a retry counts as the next attempt. GET /stats reports counters;
GET /log lists every request in arrival order: {t (server's monotonic clock, s), model, seed, body
(hash of the body, equal for retries), status, tokens (usage total_tokens of the reply, 0 if none)}.
What a request is answered (qualities, verdicts, stages) lives in tests/servers/answers.py, shared with
the Anthropic and Gemini servers there.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent / "servers"))
from answers import directives_in, preferred, quality, reply, stage_of  # noqa: E402  (shared with tests/servers/)

PREFERENCE = 0.8  # [[judge-always-2]]: the probability its logprobs put on the response it prefers


def logprobs_of(content: str, prefer: int | None) -> dict:
    """OpenAI's `logprobs` for a reply, one token a word; with `prefer` (1 or 2), the token after
    "I choose response" puts PREFERENCE on that number, whatever the text says."""
    tokens = re.findall(r"\s*[A-Za-z]+|\s*\d|\s*[^\sA-Za-z\d]", content)
    entries, said = [], ""
    for token in tokens:
        top = {token: 0.0}
        if prefer is not None and said.rstrip().endswith("I choose response") and token.strip() in ("1", "2"):
            p1 = PREFERENCE if prefer == 1 else 1 - PREFERENCE
            top = {" 1": math.log(p1), " 2": math.log(1 - p1)}
        entries.append({"token": token, "logprob": top.get(token, top.get(" " + token.strip(), 0.0)),
                        "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top.items()]})
        said += token
    return {"content": entries}


def _text_of(messages: list[dict]) -> str:
    parts = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts.extend(p.get("text", "") for p in c if p.get("type") == "text")
    return "\n".join(parts)


class FakeServer:
    def __init__(self, latency_s: float, hang_s: float, check_fails_q: int | None = None):
        self.latency_s = latency_s
        self.check_fails_q = check_fails_q
        self.hang_s = hang_s
        self.attempts: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.release = asyncio.Event()
        self.in_flight = 0
        self.log: list[dict] = []  # one entry per request, stamped on arrival

    async def chat(self, request: web.Request) -> web.StreamResponse:
        request["log"] = entry = {"t": time.monotonic(), "status": None, "tokens": 0}
        self.log.append(entry)
        self.in_flight += 1
        self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.in_flight)
        try:
            response = await self._chat(request)
            entry["status"] = entry["status"] or response.status
            return response
        finally:
            self.in_flight -= 1

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.stats["requests"] += 1
        try:
            body = json.loads(raw)
        except ValueError:
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        text = _text_of(body.get("messages", []))
        directives = directives_in(text)
        request["log"].update(model=body.get("model"), seed=body.get("seed"),
                              body=hashlib.sha256(raw).hexdigest()[:16])
        attempt = 1
        if directives:
            key = hashlib.sha256(raw).hexdigest()
            self.attempts[key] += 1
            attempt = self.attempts[key]
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop

        for name in ("429", "500", "503"):
            if name in directives and attempt <= int(directives[name][0] or 1):
                self.stats[f"fault_{name}"] += 1
                retry_after = directives.get("retry-after", (None, "0.05"))[1]
                headers = {"Retry-After": retry_after} if name == "429" else {}
                return web.json_response({"error": {"message": f"scripted {name}"}}, status=int(name),
                                         headers=headers)
        if "echo-auth" in directives:
            auth = request.headers.get("Authorization", "")
            return web.json_response({"error": {"message": f"Incorrect API key provided: {auth}"}},
                                     status=401)
        if "fail-seed" in directives and str(body.get("seed")) == directives["fail-seed"][1]:
            await self.release.wait()
            self.stats["fault_seed"] += 1
            return web.json_response({"error": {"message": "scripted failure for this seed"}}, status=400)
        if "slow-seed" in directives and str(body.get("seed")) in directives["slow-seed"][1].split(","):
            self.stats["slow_seed_waiting"] += 1
            deadline = time.monotonic() + self.hang_s
            while time.monotonic() < deadline:
                if request.transport is None or request.transport.is_closing():
                    self.stats["disconnected"] += 1
                    request["log"]["status"] = "disconnected"
                    return web.Response(status=499)
                await asyncio.sleep(0.01)
        if "always500" in directives:
            self.stats["fault_always500"] += 1
            return web.json_response({"error": {"message": "scripted permanent failure"}}, status=500)
        if "hang" in directives and attempt == 1:
            self.stats["fault_hang"] += 1
            await asyncio.sleep(self.hang_s)
        if "drop" in directives and attempt == 1:
            self.stats["fault_drop"] += 1
            request.transport.close()  # the client sees a dropped connection
            return web.Response(status=500)
        if ("badjson" in directives and attempt == 1) or "badjson-always" in directives:
            self.stats["fault_badjson"] += 1
            return web.Response(text='{"choices": [{"message": ', content_type="application/json")
        if "nullchoices" in directives and attempt == 1:
            return web.json_response({"id": "chatcmpl-fake", "choices": None, "usage": None})
        if "slow" in directives and attempt == 1 and f"</{directives['slow'][1].upper()}>" in stop:
            self.stats["slow_waiting"] += 1
            await self.release.wait()

        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if "jitter" in directives:
            await asyncio.sleep(random.uniform(0, float(directives["jitter"][1]) / 1000))
        seed = body.get("seed") or 0
        n = int(body.get("n") or 1)
        messages = body.get("messages", [])
        last_user = _text_of([m for m in messages if m.get("role") == "user"][-1:])
        prefix = messages[-1].get("content") if body.get("continue_final_message") else None
        stage = stage_of(stop)
        choices = []
        completion_tokens = 0
        same = "same" in directives and directives["same"][1] in (None, stage.lower())
        for i in range(n):
            content = reply(last_user, prefix, stop, 0 if same else quality(seed, i, n, stage), directives)
            if self.check_fails_q is not None and "Reasoning Process:" in last_user \
                    and f"reasoning q={self.check_fails_q}." in last_user:
                content = "The reasoning is incorrect."
            completion_tokens += len(content) // 4 + 1
            choices.append({"index": i, "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop"})
            if body.get("logprobs"):
                judging = last_user.startswith("Now you act as a judge") and "Reasoning Process:" not in last_user
                prefer = preferred(last_user, directives) if judging and "judge-always-2" in directives else None
                choices[-1]["logprobs"] = logprobs_of(content, prefer)
        self.stats["ok"] += 1
        request["log"]["tokens"] = len(text) // 4 + 1 + completion_tokens
        return web.json_response({
            "id": "chatcmpl-fake", "object": "chat.completion", "model": body.get("model"),
            "choices": choices,
            "usage": {"prompt_tokens": len(text) // 4 + 1, "completion_tokens": completion_tokens,
                      "total_tokens": len(text) // 4 + 1 + completion_tokens}})

    async def get_stats(self, _: web.Request) -> web.Response:
        return web.json_response(dict(self.stats))

    async def get_log(self, _: web.Request) -> web.Response:
        return web.json_response(self.log)

    async def do_release(self, _: web.Request) -> web.Response:
        self.release.set()
        return web.json_response({"released": True})


def make_app(latency_s: float = 0.0, hang_s: float = 30.0, check_fails_q: int | None = None) -> web.Application:
    server = FakeServer(latency_s, hang_s, check_fails_q)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.chat)
    app.router.add_get("/stats", server.get_stats)
    app.router.add_get("/log", server.get_log)
    app.router.add_get("/release", server.do_release)
    app.router.add_get("/health", lambda _: web.Response(text="ok"))
    return app


async def _serve(port: int, latency_s: float, hang_s: float, check_fails_q: int | None = None) -> None:
    runner = web.AppRunner(make_app(latency_s, hang_s, check_fails_q), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    print(f"PORT {site._server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--hang-s", type=float, default=30.0)
    ap.add_argument("--check-fails-q", type=int, default=None)
    a = ap.parse_args()
    try:
        asyncio.run(_serve(a.port, a.latency_ms / 1000, a.hang_s, a.check_fails_q))
    except KeyboardInterrupt:
        sys.exit(0)
