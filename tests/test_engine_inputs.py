"""Bad input becomes an error row naming the item and the cause; bad usage exits 2 with one line."""
from __future__ import annotations

import os

from PIL import Image

from conftest import read_jsonl, stagewise, write_items


def test_bad_rows_become_error_rows_and_the_run_goes_on(tmp_path, fake_server):
    Image.new("RGB", (64, 48), "red").save(tmp_path / "good.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    items = write_items(tmp_path / "items.jsonl", [
        {"id": "ok1", "question": "What colour?", "image": "good.png"},
        "{this is not json",
        {"id": "missing", "question": "What colour?", "image": "nowhere.png"},
        {"id": "corrupt", "question": "What colour?", "image": "corrupt.png"},
        {"id": "noquestion"},
        {"id": "ok2", "question": "And now?", "image": str(tmp_path / "good.png")},
    ])
    out = tmp_path / "run"
    proc = stagewise("generate", items, "--out", out, "--model", "hosted_vllm/fake", "--api-base",
                     fake_server.api_base, "--no-progress")
    assert proc.returncode == 3 and "4 item(s) ended in error (4 input)" in proc.stderr, proc.stderr
    rows = {r["id"]: r for r in read_jsonl(out / "results.jsonl")}
    assert set(rows) == {"ok1", "line-2", "missing", "corrupt", "noquestion", "ok2"}
    assert rows["ok1"]["status"] == rows["ok2"]["status"] == "ok"
    assert rows["line-2"]["status"] == "error" and "line 2 is not valid JSON" in rows["line-2"]["error"]
    assert "missing" in rows["missing"]["error"] and "not found" in rows["missing"]["error"]
    assert "corrupt" in rows["corrupt"]["error"] and "corrupt or unsupported image" in rows["corrupt"]["error"]
    assert "question" in rows["noquestion"]["error"]


def test_api_key_never_written(tmp_path, fake_server):
    marker = "sk-MARKER-7f3a9c1e5d"
    items = write_items(tmp_path / "items.jsonl", [
        {"id": "a", "question": "plain"}, {"id": "b", "question": "provider echoes the key [[echo-auth]]"}])
    out = tmp_path / "run"
    env = {"OPENAI_API_KEY": marker}
    for client in ("direct", "litellm"):
        proc = stagewise("generate", items, "--out", out / client, "--model", "openai/fake", "--api-base",
                         fake_server.api_base, "--client", client, "--no-progress", "--max-retries", "0",
                         env=env)
        assert proc.returncode == 3 and "(1 bad_request)" in proc.stderr and marker not in proc.stderr
        rows = {r["id"]: r for r in read_jsonl(out / client / "results.jsonl")}
        assert rows["a"]["status"] == "ok" and rows["b"]["status"] == "error"
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "cache.sqlite" for p in files)
    for p in files:
        assert marker.encode() not in p.read_bytes(), f"key leaked into {p}"
        assert b"MARKER-7f3a" not in p.read_bytes(), f"part of the key leaked into {p}"


def _one_line_exit_2(proc) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stagewise: error:"), proc.stderr


def test_bad_usage_exits_2_with_one_line(tmp_path, fake_server):
    items = write_items(tmp_path / "items.jsonl", [{"id": "a", "question": "q"}])
    base = ["--out", tmp_path / "run", "--api-base", fake_server.api_base]
    _one_line_exit_2(stagewise("generate", items, *base, "--model", "hosted_vllm/fake", "--graph", "nope"))
    _one_line_exit_2(stagewise("generate", tmp_path / "absent.jsonl", *base, "--model", "hosted_vllm/fake"))
    _one_line_exit_2(stagewise("generate", items, *base, "--model", "not a model"))
    _one_line_exit_2(stagewise("generate", items, *base, "--model", "zzz:thing"))
    _one_line_exit_2(stagewise("generate", items, *base, "--model", "nonexistent-provider-model-x"))
    _one_line_exit_2(stagewise("generate", items, *base, "--model", "hosted_vllm/fake", "--concurrency", "x"))
    assert not (tmp_path / "run" / "results.jsonl").exists()
