"""Providers beyond OpenAI's wire format, through the engine's LiteLLM path, and fallback models.

Each server in tests/servers/ speaks one provider's format strictly (Anthropic's Messages API, Gemini's
generateContent) and answers like tests/fake_server.py: candidates of one prompt get distinct qualities
q = 0, 1, 2, ... and the judge prefers the higher q, so a stage_beam run that fanned n out into distinct
samples ends with q = n-1 in every stage. The servers log every request with their own clock, which is
where retries, Retry-After waits, images and token counts are checked.
"""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT, read_jsonl, stagewise, write_items

N = 3
KEY_MARKER = "sk-MARKER-never-written-7f3a9c"
RETRY_AFTER_S = 1


class ProviderServer:
    """One scripted provider server from tests/servers/, on 127.0.0.1 at a free port."""

    def __init__(self, script: str, *args: str):
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "servers" / script), "--port", "0",
                                      "--retry-after", str(RETRY_AFTER_S), *args], stdout=subprocess.PIPE, text=True)
        self.base = f"http://127.0.0.1:{int(self.proc.stdout.readline().split()[1])}"

    def stats(self) -> dict:
        with urllib.request.urlopen(self.base + "/stats", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def start_server():
    servers: list[ProviderServer] = []

    def start(script: str, *args: str) -> ProviderServer:
        servers.append(ProviderServer(script, *args))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


# provider → (server script, LiteLLM model string with a price in LiteLLM's map, api_base path, key env var,
#             the status its "overloaded" directive is answered with)
PROVIDERS = {
    "anthropic": ("anthropic_server.py", "anthropic/claude-haiku-4-5", "", "ANTHROPIC_API_KEY", 529),
    "gemini": ("gemini_server.py", "gemini/gemini-2.5-flash", "/v1beta", "GEMINI_API_KEY", 503),
}


def _items(tmp_path: Path, *extra: dict) -> Path:
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "chart.png")
    return write_items(tmp_path / "items.jsonl", [
        {"id": "img", "question": "Which bar is the tallest?", "image": "chart.png", "answer": "A"},
        {"id": "rate", "question": "Which bar is shortest? [[429x1]]", "image": "chart.png", "answer": "A"},
        {"id": "busy", "question": "How many bars? [[529x1]]", "image": "chart.png", "answer": "A"},
        *extra])


def _price(model: str) -> tuple[float, float]:
    import litellm

    entry = litellm.model_cost[model.split("/", 1)[1]]
    return entry["input_cost_per_token"], entry["output_cost_per_token"]


def _no_key_in(out: Path) -> list[str]:
    return [str(p) for p in out.rglob("*") if p.is_file() and KEY_MARKER.encode() in p.read_bytes()]


@pytest.mark.parametrize("provider,mode", [("anthropic", "staged"), ("gemini", "staged"), ("anthropic", "full")])
def test_stage_beam_through_litellm(tmp_path, start_server, provider, mode):
    """staged: one prompt per stage. full (Anthropic): the chosen prefix sent as an assistant prefill."""
    script, model, path, key_env, overloaded = PROVIDERS[provider]
    server = start_server(script)
    items = _items(tmp_path, {"id": "leak", "question": "Echo my key [[echo-auth]]"})
    out = tmp_path / "out"
    proc = stagewise("generate", items, "--out", out, "--graph", "stage_beam", "--mode", mode, "--n", N,
                     "--model", model, "--api-base", server.base + path, "--backoff", "0.01", "--no-progress",
                     env={key_env: KEY_MARKER})
    rows = {r["id"]: r for r in read_jsonl(out / "results.jsonl")}
    traces = read_jsonl(out / "traces.jsonl")
    calls = [t for t in traces if t["event"] == "llm.call"]
    stats = server.stats()
    log = stats["log"]

    # the key-echoing item is an error row (a 4xx is not retried); every other item is ok, best of n
    assert proc.returncode == 3, proc.stderr
    assert rows.pop("leak")["status"] == "error"
    assert all(r["status"] == "ok" for r in rows.values()), [r["error"] for r in rows.values()]
    for r in rows.values():
        assert all(f"q={N - 1}" in body for body in r["stages"].values()), r["stages"]

    # the server took every request as its format (no 400), images included, decoded at their size
    assert [e["problem"] for e in log if "problem" in e] == []
    assert stats["images"] and not stats.get("images_bad")
    assert {(i["media_type"], tuple(i["size"])) for i in stats["images"]} == {("image/png", (40, 30))}
    assert any(e.get("prefill") for e in log) == (mode == "full")

    # n > 1 fanned out: one n=1 request per sample, and each sample of a prompt a distinct one
    generate = [t for t in calls if t["role"] == "generate" and t["status"] == "ok"]
    groups = defaultdict(set)
    for t in generate:
        groups[t["item_id"], t["stage"]].add(t["sample"])
    assert len(groups) == 3 * 4 and all(s == set(range(N)) for s in groups.values())
    assert all(t["n"] == N for t in generate)  # the graph's request, however it was sent (docs/traces.md)
    samples = Counter(e["prompt"] for e in log if e["status"] == 200)
    assert sum(1 for count in samples.values() if count == N) == len(groups)

    # usage: what the server reported is what traces, rows and the summary hold
    served = [e for e in log if e["status"] == 200]
    fresh = [t for t in calls if t["status"] == "ok" and t["cache"] == "miss"]
    assert sum(t["prompt_tokens"] for t in fresh) == sum(e["input_tokens"] for e in served)
    assert sum(t["completion_tokens"] for t in fresh) == sum(e["output_tokens"] for e in served)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompt_tokens"] == sum(r["usage"]["prompt_tokens"] for r in rows.values()) > 0

    # cost from LiteLLM's price map for this model, per call
    p_in, p_out = _price(model)
    for t in fresh:
        assert t["cost_usd"] == pytest.approx(t["prompt_tokens"] * p_in + t["completion_tokens"] * p_out)
    assert summary["cost_usd"] > 0
    assert summary["cost_usd"] == pytest.approx(sum(t["cost_usd"] for t in calls), rel=1e-4)

    # retries on 429 and on "overloaded"; the 429's Retry-After honoured (the server's own clock)
    by_key = defaultdict(list)
    for e in log:
        by_key[e["key"]].append(e)
    faulted = [es for es in by_key.values() if es[0]["status"] in (429, overloaded)]
    assert {es[0]["status"] for es in faulted} == {429, overloaded}
    assert all(any(e["status"] == 200 for e in es[1:]) for es in faulted)
    # (samples of one prompt can be byte-identical: the retry is the request of that body that came last)
    waits = [es[-1]["ts"] - es[0]["ts"] for es in faulted if es[0]["status"] == 429]
    assert min(waits) >= RETRY_AFTER_S - 0.05, waits
    assert {t["error"].split(":")[0] for t in calls if t["status"] == "retry"} == {"rate_limit", "server"}

    # the API key reached the server, was echoed back, and is in no file we wrote
    assert _no_key_in(out) == []


ANTHROPIC, GEMINI = PROVIDERS["anthropic"][1], PROVIDERS["gemini"][1]


@pytest.mark.parametrize("fail_status", [529, 401])
def test_fallback_model_answers_when_the_primary_cannot(tmp_path, start_server, fail_status):
    """Primary: Anthropic, overloaded for good (retried, then given up) or rejecting the key (not retried).
    Fallback: Gemini at its own base URL. Every item is answered, and the traces say by whom."""
    primary = start_server("anthropic_server.py", "--fail-status", str(fail_status))
    fallback = start_server("gemini_server.py")
    Image.new("RGB", (40, 30), (30, 30, 200)).save(tmp_path / "chart.png")
    items = write_items(tmp_path / "items.jsonl", [
        {"id": f"f{i}", "question": f"Which bar is the tallest? ({i})", "image": "chart.png"} for i in range(2)])
    out = tmp_path / "out"
    stagewise("generate", items, "--out", out, "--graph", "stage_beam", "--n", 2, "--model", ANTHROPIC,
              "--api-base", primary.base, "--fallback-model", GEMINI, "--fallback-api-base", fallback.base + "/v1beta",
              "--max-retries", 1, "--backoff", "0.01", "--no-progress",
              env={"ANTHROPIC_API_KEY": KEY_MARKER, "GEMINI_API_KEY": KEY_MARKER}, check=True)
    rows = read_jsonl(out / "results.jsonl")
    traces = read_jsonl(out / "traces.jsonl")
    calls = [t for t in traces if t["event"] == "llm.call"]

    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    assert all("q=1" in body for r in rows for body in r["stages"].values())
    answered = [t for t in calls if t["status"] == "ok"]
    assert answered and {t["model"] for t in answered} == {GEMINI}
    for r in rows:
        assert r["answered_by"] == {GEMINI: sum(1 for t in answered if t["item_id"] == r["id"])}

    tried = [t for t in calls if t["model"] == ANTHROPIC]
    given_up = [t for t in tried if t["status"] == "error"]
    moved = [t for t in traces if t["event"] == "llm.fallback"]
    assert moved and all(t["model"] == ANTHROPIC and t["fallback"] == GEMINI for t in moved)
    reason = {529: "server", 401: "bad_request"}[fail_status] + ": "  # the error kind the engine gave it
    assert given_up and all(t["error"].startswith(reason) for t in given_up + moved)
    if fail_status == 529:  # retryable: each sample retried once (--max-retries 1) before moving on
        assert {t["attempt"] for t in given_up} == {2} and any(t["status"] == "retry" for t in tried)
    else:  # a rejected key cannot get better with retries: straight to the fallback
        assert {t["attempt"] for t in tried} == {1} and all(t["status"] == "error" for t in tried)
    assert primary.stats()["requests"] >= len(moved)
    assert _no_key_in(out) == []


def test_fallback_api_bases_must_match_the_models(tmp_path):
    items = write_items(tmp_path / "items.jsonl", [{"id": "x", "question": "q"}])
    proc = stagewise("generate", items, "--out", tmp_path / "out", "--model", "hosted_vllm/a", "--api-base",
                     "http://127.0.0.1:9/v1", "--fallback-model", "hosted_vllm/b,hosted_vllm/c",
                     "--fallback-api-base", "http://127.0.0.1:9/v1,http://127.0.0.1:8/v1,http://127.0.0.1:7/v1")
    assert proc.returncode == 2
    assert "3 --fallback-api-base values for 2 fallback models" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_judge_on_its_own_server_falls_back_with_the_generator(tmp_path, fake_server):
    """--judge-api-base with no --judge-model: the same model on another server, which falls back as the
    generator does (docs/providers.md). Both servers are down; the fallback answers every call."""
    items = write_items(tmp_path / "items.jsonl", [{"id": f"x{i}", "question": f"Which? ({i})"} for i in range(2)])
    out = tmp_path / "out"
    stagewise("generate", items, "--out", out, "--graph", "best_of_n", "--n", 2, "--model", "hosted_vllm/a",
              "--api-base", "http://127.0.0.1:9/v1", "--judge-api-base", "http://127.0.0.1:7/v1",
              "--fallback-model", "hosted_vllm/b", "--fallback-api-base", fake_server.api_base,
              "--max-retries", 0, "--no-progress", check=True)
    calls = [t for t in read_jsonl(out / "traces.jsonl") if t["event"] == "llm.call" and t["status"] == "ok"]
    assert {t["role"] for t in calls} == {"generate", "judge"} and {t["model"] for t in calls} == {"hosted_vllm/b"}


def test_a_price_for_self_hosted_models_leaves_priced_ones_alone(monkeypatch):
    from engine import pricing

    pricing.prices.cache_clear()
    mapped = pricing.prices("openai/gpt-4o-mini")
    assert mapped[0] > 0  # in the installed price map
    monkeypatch.setenv("STAGEWISE_PRICE_PER_MTOK", "100,200")
    pricing.prices.cache_clear()
    try:
        assert pricing.prices("openai/gpt-4o-mini") == mapped
        assert pricing.prices("hosted_vllm/my-own-model") == pytest.approx((100e-6, 200e-6))
    finally:
        pricing.prices.cache_clear()
