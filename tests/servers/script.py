"""What every wire-format server keeps besides its format: attempts per exact request, samples per prompt,
scripted faults, the images it received, and a request log stamped with the server's own clock.

Fault directives in the request's text (each server renders them in its provider's error shape):
  [[429xK]] [[500xK]] [[503xK]] [[529xK]]  that status for the first K attempts of this exact request
  [[always500]]  never succeeds;   [[echo-auth]]  401 quoting the API key the request carried
`--fail-status S` answers S to every request (a provider that is down, or rejects the key).
GET /stats: counters, `images` (media type and size of each decoded image) and `log` (one entry a
request: ts, request key, prompt key, status, q). Start: `python SERVER.py --port 0` prints "PORT n".
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import json
import sys
import time
from collections import Counter
from typing import Any, Callable, NamedTuple

from aiohttp import web

MAGIC = {"image/png": b"\x89PNG", "image/jpeg": b"\xff\xd8\xff", "image/gif": b"GIF8", "image/webp": b"RIFF"}


class Fault(NamedTuple):
    status: int
    name: str


def digest(obj: Any) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj, sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


class Script:
    def __init__(self, fail_status: int | None = None, latency_s: float = 0.0, retry_after_s: int = 1):
        self.fail_status = fail_status
        self.latency_s = latency_s
        self.retry_after_s = retry_after_s
        self.attempts: Counter[str] = Counter()
        self.samples: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.images: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []

    def attempt(self, raw: bytes) -> tuple[str, int]:
        """(key of this exact request, which attempt of it this is): a retry is the next attempt."""
        key = digest(raw)
        self.attempts[key] += 1
        self.stats["requests"] += 1
        return key, self.attempts[key]

    def fault(self, directives: dict, attempt: int) -> Fault | None:
        if self.fail_status:
            return Fault(self.fail_status, "fail-status")
        for name in ("429", "500", "503", "529"):
            if name in directives and attempt <= int(directives[name][0] or 1):
                return Fault(int(name), name)
        if "echo-auth" in directives:
            return Fault(401, "echo-auth")
        if "always500" in directives:
            return Fault(500, "always500")
        return None

    def sample(self, prompt_key: str) -> int:
        """Quality of the next sample of this prompt: 0, 1, 2, ... Providers without `n` (or a seed
        that reaches the server) are asked n times the same thing; each answer must still differ."""
        q = self.samples[prompt_key]
        self.samples[prompt_key] += 1
        return q

    def image(self, media_type: str, data: str) -> bool:
        """Decode a base64 image as the provider would; False (and counted) if it is not one."""
        try:
            raw = base64.b64decode(data, validate=True)
        except ValueError:
            raw = b""
        if not raw.startswith(MAGIC.get(media_type, b"\0bad")):
            self.stats["images_bad"] += 1
            return False
        from PIL import Image

        with Image.open(io.BytesIO(raw)) as im:
            self.images.append({"media_type": media_type, "size": list(im.size)})
        return True

    def note(self, key: str, status: int, fault: str | None = None, **fields: Any) -> None:
        self.stats[f"status_{status}"] += 1
        self.log.append({"ts": time.time(), "key": key, "status": status, "fault": fault, **fields})

    async def get_stats(self, _: web.Request) -> web.Response:
        return web.json_response({**self.stats, "images": self.images, "log": self.log})


def run(make_app: Callable[[Script], web.Application], description: str) -> None:
    """The command line every server shares: `--port 0` picks a free port, printed as `PORT n`."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--fail-status", type=int, default=None, help="answer this status to every request")
    ap.add_argument("--retry-after", type=int, default=1, help="seconds a 429 asks the client to wait")
    a = ap.parse_args()
    script = Script(a.fail_status, a.latency_ms / 1000, a.retry_after)

    async def serve() -> None:
        app = make_app(script)
        app.router.add_get("/stats", script.get_stats)
        app.router.add_get("/health", lambda _: web.Response(text="ok"))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", a.port)
        await site.start()
        print(f"PORT {site._server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)
