"""Shared fixtures: real servers on 127.0.0.1 (the scripted fake, and a CPU vLLM), the CLI as a user runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parent.parent


class FakeServer:
    def __init__(self, latency_ms: float = 0.0, hang_s: float = 30.0, args: tuple[str, ...] = ()):
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "fake_server.py"), "--port", "0",
             "--latency-ms", str(latency_ms), "--hang-s", str(hang_s), *args],
            stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline().split()[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self.api_base = self.base + "/v1"

    def get(self, path: str) -> dict:
        import urllib.request

        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def fake_server_factory():
    servers: list[FakeServer] = []

    def start(**kw) -> FakeServer:
        servers.append(FakeServer(**kw))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def fake_server(fake_server_factory) -> FakeServer:
    return fake_server_factory()


def stagewise(*args: str, env: dict | None = None, check: bool = False, **kw) -> subprocess.CompletedProcess:
    """Run the CLI as a user would: a fresh process, `python -m stagewise ...`."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "stagewise", *map(str, args)], capture_output=True,
                          text=True, env=full_env, cwd=kw.pop("cwd", ROOT), timeout=kw.pop("timeout", 240), **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"stagewise {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def start_stagewise(*args: object, env: dict | None = None) -> subprocess.Popen:
    """`stagewise ARGS` in the background, as a user's shell would run it (stderr kept for the test)."""
    return subprocess.Popen([sys.executable, "-m", "stagewise", *map(str, args)], cwd=ROOT,
                            env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, what: str, limit_s: float = 60.0) -> None:
    """Poll for a condition (not a timing assumption: the limit only bounds a broken run)."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def rows_in(path: Path) -> int:
    """Lines written so far to a JSONL file (0 before it exists)."""
    return len(path.read_text().splitlines()) if path.exists() else 0


def write_items(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    # split on newlines only: str.splitlines also breaks at U+2028, which JSON leaves raw inside strings
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


@pytest.fixture(scope="session")
def vllm_base() -> str:
    """A real vLLM OpenAI-compatible server on CPU serving the tiny model as `tiny`."""
    base = os.environ.get("STAGEWISE_VLLM_BASE")
    if base:
        return base
    if os.environ.get("CI"):
        pytest.fail("STAGEWISE_VLLM_BASE is not set: .ci/run starts the vLLM server")
    pytest.skip("no vLLM server: run `bash .ci/vllm_server.sh start` and set STAGEWISE_VLLM_BASE")
