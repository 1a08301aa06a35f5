"""Fan-out for providers without `n`: one failed sample cancels its siblings, finished ones are kept.

Cerebras is an OpenAI-wire provider that LiteLLM sends `seed` to but not `n`, so the engine fans a
request out into one request per sample with seeds offset by the sample index; the scripted server
fails or stalls chosen seeds.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from engine.backends import make_backend
from engine.cache import Cache, request_key
from engine.client import Client
from engine.errors import BadRequest
from engine.retry import RetryPolicy
from engine.trace import Tracer
from engine.types import Request


@pytest.fixture
def no_n_backend(fake_server, monkeypatch):
    monkeypatch.setenv("CEREBRAS_API_KEY", "sk-test-not-a-key")
    backend = make_backend("cerebras/tiny", fake_server.api_base)
    assert not backend.capabilities.n_per_request
    return backend


async def _wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "the server never saw it"
        await asyncio.sleep(0.05)


async def test_a_failed_sample_cancels_its_siblings_and_keeps_the_finished_ones(
        fake_server, no_n_backend, tmp_path):
    cache = Cache(tmp_path / "cache.sqlite")
    client = Client(no_n_backend, tracer=Tracer(None), cache=cache, retry=RetryPolicy(max_attempts=1))
    # seeds 100..103: 100 answers at once, 101 is refused (400) once released, 102 and 103 stall
    request = Request(messages=[{"role": "user", "content": "[[fail-seed:101]] [[slow-seed:102,103]] hi"}],
                      n=4, seed=100, max_tokens=64)
    call = asyncio.create_task(client.complete(request))
    await _wait_for(lambda: client.usage.calls == 1)  # sample 0 is back
    await _wait_for(lambda: fake_server.get("/stats").get("slow_seed_waiting") == 2)
    fake_server.get("/release")
    with pytest.raises(BadRequest):
        await call
    # the stalled siblings were cancelled: the server sees both connections close (it would wait 30 s)
    await _wait_for(lambda: fake_server.get("/stats").get("disconnected") == 2)
    stats = fake_server.get("/stats")
    assert stats["fault_seed"] == 1 and stats["ok"] == 1 and stats["slow_seed_waiting"] == 2
    cached = cache.get(request_key(client.model, request), 4)
    assert cached[0] is not None and cached[1:] == [None, None, None]

    # a rerun asks only for the samples the cache does not hold
    sent_before = len(fake_server.get("/log"))
    with pytest.raises(BadRequest):
        await client.complete(request)
    seeds = [e["seed"] for e in fake_server.get("/log")[sent_before:]]
    assert 101 in seeds and 100 not in seeds, seeds
    await client.aclose()
    cache.close()


async def test_a_request_tagged_with_its_candidate_traces_each_sample_as_its_own(fake_server, tmp_path):
    """`candidate` is a documented request tag: sample i of a request tagged candidate=k is candidate k+i."""
    import json

    tracer = Tracer(tmp_path / "traces.jsonl")
    client = Client(make_backend("hosted_vllm/fake", fake_server.api_base), tracer=tracer)
    request = Request(messages=[{"role": "user", "content": "hi"}], n=2, seed=1, max_tokens=16,
                      tags={"stage": "s", "candidate": 4})
    assert len(await client.complete(request)) == 2
    tracer.close()
    calls = [json.loads(line) for line in (tmp_path / "traces.jsonl").read_text().split("\n") if line]
    assert sorted(c["candidate"] for c in calls if c["event"] == "llm.call") == [4, 5]
