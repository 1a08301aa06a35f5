"""A scripted OpenAI-compatible server for tests and benches: fixed latency, faults on demand.

Run: python tests/fake_server.py --port 0 --latency-ms 50   (prints "PORT <n>" when listening)

Faults are asked for by directives in the request's text, so one run can mix them across items:
  [[429x2]]   answer 429 (Retry-After) to the first 2 attempts of this exact request
  [[500x1]] [[503x1]]  server errors for the first attempts
  [[hang]]    first attempt hangs for --hang-s seconds (past the client's timeout)
  [[drop]]    first attempt: the connection is closed with no reply
  [[badjson]] first attempt: malformed JSON;   [[badjson-always]]: every attempt
  [[always500]]  never succeeds
  [[notags]]  the reply misses its closing tags
  [[slow:STAGE]] first request whose stop is </STAGE> waits until released (GET /release)
  [[answer:X]]   the conclusion answers X (default "A")
  [[echo-auth]]  answer 401 quoting the Authorization header (a provider that echoes the key)
"Exact request" = same body, so a retry counts as the next attempt. GET /stats reports counters.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
from collections import Counter

from aiohttp import web

DIRECTIVE = re.compile(r"\[\[([a-z0-9_\-]+?)(?:x(\d+)|:([^\]]+))?\]\]")
STAGES = ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION")


def _text_of(messages: list[dict]) -> str:
    parts = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts.extend(p.get("text", "") for p in c if p.get("type") == "text")
    return "\n".join(parts)


def quality(seed: int, sample: int, n: int, stage: str = "") -> int:
    """Candidates of one request get distinct qualities 0..n-1; which index is best varies by stage."""
    return (sample + seed + len(stage)) % max(1, n)


def stage_bodies(answer: str, q: int) -> dict[str, str]:
    """One sentence per stage, q (the candidate's quality) inside it, decimals to tempt splitters."""
    return {"SUMMARY": f"I will compare the bars, plan q={q}.",
            "CAPTION": f"A bar chart whose tallest bar is 3.5 units, caption q={q}.",
            "REASONING": f"Since 3.5 is the largest value the answer follows, reasoning q={q}.",
            "CONCLUSION": f"(q={q}) The answer is {answer}."}


def four_stage_answer(answer: str, q: int, tags: bool = True) -> str:
    bodies = stage_bodies(answer, q)
    if not tags:
        return "".join(f"<{s}>{b} " for s, b in bodies.items())
    return "".join(f"<{s}>{b}</{s}>" for s, b in bodies.items())


def continuation(prefix: str, answer: str, q: int) -> str:
    """What comes after `prefix`: close its open stage, then every stage it does not have yet."""
    opened = [s for s in STAGES if f"<{s}>" in prefix]
    closed = [s for s in STAGES if f"</{s}>" in prefix]
    out = "".join(f"</{s}>" for s in opened if s not in closed)
    bodies = stage_bodies(answer, q)
    return out + "".join(f"<{s}>{bodies[s]}</{s}>" for s in STAGES if s not in opened)


def judge_reply(text: str, directives: dict) -> str:
    """Prefer the response with the higher q; the check always passes."""
    if "judge-garbage" in directives:
        return "Both responses have merits."
    if "Reasoning Process:" in text:
        return "correct"
    r1 = re.search(r"Repsonse 1:(.*?)Repsonse 2:", text, re.S)
    r2 = re.search(r"Repsonse 2:(.*)", text, re.S)
    q1 = re.search(r"q=(\d+)", r1.group(1)) if r1 else None
    q2 = re.search(r"q=(\d+)", r2.group(1)) if r2 else None
    better = 2 if q2 and (not q1 or int(q2.group(1)) > int(q1.group(1))) else 1
    return f"Since response {better} is better, I choose response {better}."


class FakeServer:
    def __init__(self, latency_s: float, hang_s: float):
        self.latency_s = latency_s
        self.hang_s = hang_s
        self.attempts: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.release = asyncio.Event()
        self.in_flight = 0

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.in_flight)
        try:
            return await self._chat(request)
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
        directives = {m.group(1): (m.group(2), m.group(3)) for m in DIRECTIVE.finditer(text)}
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
                headers = {"Retry-After": "0.05"} if name == "429" else {}
                return web.json_response({"error": {"message": f"scripted {name}"}}, status=int(name),
                                         headers=headers)
        if "echo-auth" in directives:
            auth = request.headers.get("Authorization", "")
            return web.json_response({"error": {"message": f"Incorrect API key provided: {auth}"}},
                                     status=401)
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
        if "slow" in directives and attempt == 1 and f"</{directives['slow'][1].upper()}>" in stop:
            self.stats["slow_waiting"] += 1
            await self.release.wait()

        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        answer = directives.get("answer", (None, None))[1] or "A"
        seed = body.get("seed") or 0
        n = int(body.get("n") or 1)
        messages = body.get("messages", [])
        last_user = _text_of([m for m in messages if m.get("role") == "user"][-1:])
        prefix = messages[-1].get("content") if body.get("continue_final_message") else None
        restated = re.search(r"continue it exactly where it stops; do not repeat it\):\n(.*)$", last_user, re.S)
        if restated:
            prefix = restated.group(1)
        only = re.search(r"Now write only the (\w+) stage", last_user)
        stage = next((s for s in STAGES if f"</{s}>" in stop), "")
        choices = []
        completion_tokens = 0
        for i in range(n):
            q = quality(seed, i, n, stage)
            if last_user.startswith("Now you act as a judge"):
                content = judge_reply(last_user, directives)
            elif prefix:
                content = continuation(prefix, answer, q)
            elif only:
                tag = only.group(1)
                close = "" if "notags" in directives else f"</{tag}>"
                content = f"<{tag}>{stage_bodies(answer, q)[tag]}{close}"
            else:
                content = four_stage_answer(answer, q, tags="notags" not in directives)
            for s in stop:
                if s in content:
                    content = content[: content.index(s)]
            completion_tokens += len(content) // 4 + 1
            choices.append({"index": i, "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop"})
        self.stats["ok"] += 1
        return web.json_response({
            "id": "chatcmpl-fake", "object": "chat.completion", "model": body.get("model"),
            "choices": choices,
            "usage": {"prompt_tokens": len(text) // 4 + 1, "completion_tokens": completion_tokens,
                      "total_tokens": len(text) // 4 + 1 + completion_tokens}})

    async def get_stats(self, _: web.Request) -> web.Response:
        return web.json_response(dict(self.stats))

    async def do_release(self, _: web.Request) -> web.Response:
        self.release.set()
        return web.json_response({"released": True})


def make_app(latency_s: float = 0.0, hang_s: float = 30.0) -> web.Application:
    server = FakeServer(latency_s, hang_s)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.chat)
    app.router.add_get("/stats", server.get_stats)
    app.router.add_get("/release", server.do_release)
    app.router.add_get("/health", lambda _: web.Response(text="ok"))
    return app


async def _serve(port: int, latency_s: float, hang_s: float) -> None:
    runner = web.AppRunner(make_app(latency_s, hang_s), access_log=None)
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
    a = ap.parse_args()
    try:
        asyncio.run(_serve(a.port, a.latency_ms / 1000, a.hang_s))
    except KeyboardInterrupt:
        sys.exit(0)
