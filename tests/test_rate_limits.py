"""--rpm, --tpm and Retry-After, measured where they matter: at the server, from its own arrival times.

Pacing promises (docs/limits.md): requests go out at most rpm/60 a second and tokens at most tpm/60 a
second, with no burst. Seen from the server, a request may arrive a little late (the network, the
event loop), so each bound below allows one request's worth of slack, no more; an unpaced job sends
its whole load in a few milliseconds and breaks them many times over.
"""
from __future__ import annotations

import itertools

from conftest import stagewise, write_items


def _items(tmp_path, count: int, directive: str = "") -> object:
    return write_items(tmp_path / "items.jsonl", [
        {"id": f"q{i}", "question": f"{directive}Which bar is tallest? (item {i})", "choices": ["A", "B"]}
        for i in range(count)])


def _run(server, tmp_path, items, *options: str):
    return stagewise("generate", items, "--out", tmp_path / "out", "--api-base", server.api_base,
                     "--no-progress", "--no-cache", *options)


def test_rpm_holds_for_generator_and_judge_together(fake_server, tmp_path):
    """A judge on the generator's account (same provider, same base) shares one request budget."""
    rpm = 120  # 2 requests a second
    proc = _run(fake_server, tmp_path, _items(tmp_path, 7), "--graph", "best_of_n", "--n", "2",
                "--model", "hosted_vllm/gen", "--judge-model", "hosted_vllm/judge",
                "--rpm", str(rpm), "--concurrency", "8")
    assert proc.returncode == 0, proc.stderr
    log = fake_server.get("/log")
    assert {e["model"] for e in log} == {"gen", "judge"} and len(log) >= 12
    rate = rpm / 60
    times = [e["t"] for e in log]
    for i, j in itertools.combinations(range(len(times)), 2):
        # j - i requests started after request i and by request j: at most rate·elapsed, + 1 of slack
        assert j - i <= rate * (times[j] - times[i]) + 1, (i, j, times[j] - times[i])


def test_tpm_holds_over_every_window(fake_server, tmp_path):
    tpm = 36_000  # 600 tokens a second; the job's ~3,800 tokens take ~6 s paced, milliseconds unpaced
    proc = _run(fake_server, tmp_path, _items(tmp_path, 8), "--graph", "chain", "--mode", "full",
                "--model", "hosted_vllm/gen", "--tpm", str(tpm), "--concurrency", "1")
    assert proc.returncode == 0, proc.stderr
    log = fake_server.get("/log")
    assert len(log) == 8 and all(e["tokens"] > 0 for e in log)
    rate = tpm / 60
    largest = max(e["tokens"] for e in log)
    assert sum(e["tokens"] for e in log) > 5 * largest  # the bound below is not met by slack alone
    for i, j in itertools.combinations(range(len(log)), 2):
        spent = sum(e["tokens"] for e in log[i:j])  # tokens of the calls that started before request j
        assert spent <= rate * (log[j]["t"] - log[i]["t"]) + largest, (i, j, spent)


def _gap_between_attempts(log: list[dict]) -> float:
    """Seconds between the first two arrivals of the one request that was sent twice."""
    by_body: dict[str, list[float]] = {}
    for e in log:
        by_body.setdefault(e["body"], []).append(e["t"])
    retried = [ts for ts in by_body.values() if len(ts) > 1]
    assert len(retried) == 1, by_body
    return retried[0][1] - retried[0][0]


def test_retry_after_delays_the_retry_even_with_a_tiny_backoff(fake_server, tmp_path):
    proc = _run(fake_server, tmp_path, _items(tmp_path, 1, "[[429x1]] [[retry-after:2]] "),
                "--graph", "chain", "--mode", "full", "--model", "hosted_vllm/gen", "--backoff", "0.01")
    assert proc.returncode == 0, proc.stderr
    log = fake_server.get("/log")
    assert [e["status"] for e in log] == [429, 200]
    assert 1.9 <= _gap_between_attempts(log) < 10


def test_retry_after_is_capped_by_max_retry_after(fake_server, tmp_path):
    proc = _run(fake_server, tmp_path, _items(tmp_path, 1, "[[429x1]] [[retry-after:30]] "),
                "--graph", "chain", "--mode", "full", "--model", "hosted_vllm/gen", "--backoff", "0.01",
                "--max-retry-after", "1")
    assert proc.returncode == 0, proc.stderr
    log = fake_server.get("/log")
    assert [e["status"] for e in log] == [429, 200]
    assert 0.9 <= _gap_between_attempts(log) < 10  # 30 s asked, 1 s allowed


def test_a_retry_after_that_is_neither_seconds_nor_a_date_falls_back_to_the_backoff(fake_server, tmp_path):
    proc = _run(fake_server, tmp_path, _items(tmp_path, 1, "[[429x1]] [[retry-after:1s]] "),
                "--graph", "chain", "--mode", "full", "--model", "hosted_vllm/gen", "--backoff", "0.01")
    assert proc.returncode == 0, proc.stderr
    assert [e["status"] for e in fake_server.get("/log")] == [429, 200]


def test_max_retry_after_must_not_be_negative(tmp_path):
    proc = stagewise("generate", _items(tmp_path, 1), "--out", tmp_path / "out", "--model", "hosted_vllm/x",
                     "--api-base", "http://127.0.0.1:9/v1", "--max-retry-after", "-1")
    assert proc.returncode == 2 and "--max-retry-after must be 0 or more seconds" in proc.stderr
