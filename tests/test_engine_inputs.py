"""Bad input becomes an error row naming the item and the cause; bad usage exits 2 with one line."""
from __future__ import annotations

import asyncio
import base64
import io
import os
import struct
import zlib

import pytest
from PIL import Image

from conftest import read_jsonl, stagewise, write_items

from engine.images import ImageError, fetch, load_image_data_url
from engine.runner import describe_error
from engine.secrets import redact
from stagewise.cli import main


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


def test_keys_are_redacted_but_ids_that_contain_sk_are_not():
    key = "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl"
    assert redact(f"Incorrect API key provided: {key}.") == "Incorrect API key provided: sk-[redacted]"
    assert redact(f"({key})") == "(sk-[redacted])"
    assert redact("Authorization: Bearer abc123def456") == "Authorization: Bearer [redacted]"
    for text in ("item task-abcdef12: timeout", "image /data/disk-0123456789abcdef0123456789.png",
                 "item risk-assessment_2024_batch_07_q3 failed", "item sk-small1 failed"):
        assert redact(text) == text


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


@pytest.mark.parametrize("option", [("--max-retries", "-1"), ("--timeout", "0"), ("--timeout", "-5"),
                                    ("--timeout", "nan"), ("--backoff", "-0.5"), ("--items-in-flight", "0"),
                                    ("--max-sentences", "0"), ("--max-image-side", "0")])
def test_out_of_range_numbers_are_bad_usage(tmp_path, capsys, option):
    items = write_items(tmp_path / "items.jsonl", [{"id": "a", "question": "q"}])
    out = tmp_path / "run"
    status = main(["generate", str(items), "--out", str(out), "--model", "hosted_vllm/fake",
                   "--api-base", "http://127.0.0.1:9/v1", "--no-progress", *option])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith(f"stagewise: error: {option[0]} must be"), err
    assert not out.exists()


@pytest.mark.parametrize("price", ["1", "a,b", "1,2,3"])
def test_a_malformed_price_is_bad_usage(tmp_path, capsys, monkeypatch, price):
    monkeypatch.setenv("STAGEWISE_PRICE_PER_MTOK", price)
    items = write_items(tmp_path / "items.jsonl", [{"id": "a", "question": "q"}])
    status = main(["generate", str(items), "--out", str(tmp_path / "run"), "--model", "hosted_vllm/fake",
                   "--api-base", "http://127.0.0.1:9/v1", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "STAGEWISE_PRICE_PER_MTOK" in err[0] and not (tmp_path / "run").exists()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height: Pillow refuses it by its size before decoding a pixel."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("ref", ["bomb.png", "bad\x00name.png", "http://exa mple.com/a b.png"])
def test_an_unusable_image_is_an_input_error(tmp_path, ref):
    (tmp_path / "bomb.png").write_bytes(_png_header_only(40000, 40000))
    with pytest.raises(ImageError) as caught:
        load_image_data_url(ref, tmp_path)
    assert describe_error("x", caught.value)[1] == "input"


def test_an_image_url_that_fails_for_the_network_is_retried_by_a_rerun(tmp_path, fake_server):
    # nothing listens on port 9: the fetch fails for the network's reason; the server's 404 is the URL's own
    items = write_items(tmp_path / "items.jsonl", [
        {"id": "down", "question": "Q", "image": "http://127.0.0.1:9/chart.png"},
        {"id": "gone", "question": "Q", "image": fake_server.api_base.replace("/v1", "/no-such-chart.png")}])
    out = tmp_path / "run"
    args = ("generate", items, "--out", out, "--graph", "chain", "--model", "hosted_vllm/fake", "--api-base",
            fake_server.api_base, "--no-progress")
    assert stagewise(*args).returncode == 3
    causes = {r["id"]: r["error_cause"] for r in read_jsonl(out / "results.jsonl")}
    assert causes == {"down": "connection", "gone": "input"}
    assert stagewise(*args).returncode == 3  # the rerun tries "down" again and keeps "gone" as it was
    assert [r["id"] for r in read_jsonl(out / "retried.jsonl")] == ["down"]


@pytest.fixture
async def image_server():
    """An image host on 127.0.0.1: /slow sends its headers, then a byte a second; /hang never answers;
    /big answers 2,000 bytes. `disconnected` counts requests whose client went away."""
    from aiohttp import web

    state = {"disconnected": 0, "waiting": 0}

    async def slow(request):
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        await resp.prepare(request)
        for _ in range(600):
            await resp.write(b"x")
            await asyncio.sleep(1)
        return resp

    async def hang(request):
        state["waiting"] += 1
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            state["disconnected"] += 1
            raise
        return web.Response()

    async def big(request):
        return web.Response(body=b"x" * 2000, content_type="image/png")

    app = web.Application()
    app.add_routes([web.get("/slow", slow), web.get("/hang", hang), web.get("/big", big)])
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", state
    await runner.cleanup()


async def test_an_image_url_has_one_deadline_and_a_size_cap(image_server):
    """A host that trickles a byte a second cannot hold an item past the whole fetch's deadline (each
    read's own timeout never fires); one that sends more than the cap is refused as input."""
    base, _ = image_server
    with pytest.raises(ImageError) as slow:
        await fetch(base + "/slow", timeout_s=2)
    assert slow.value.cause == "timeout" and "within 2 s" in str(slow.value)
    with pytest.raises(ImageError) as big:
        await fetch(base + "/big", max_bytes=1000)
    assert big.value.cause == "input" and "1000" in str(big.value)
    assert await fetch(base + "/big") == b"x" * 2000


async def test_a_cancelled_image_fetch_closes_its_connection(image_server):
    """Ctrl-C cancels an item while its image is fetched: the fetch stops and the host sees the
    connection go (a fetch on a thread would run on, and hold the process's exit)."""
    base, state = image_server
    task = asyncio.ensure_future(fetch(base + "/hang"))
    while not state["waiting"]:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    while not state["disconnected"]:
        await asyncio.sleep(0.01)


def test_odd_images_are_decoded_or_refused_as_input(tmp_path):
    """A 16-bit grey PNG larger than --max-image-side is shrunk (resizing it raised ValueError); a DDS
    whose pixel format is unknown raises NotImplementedError in Pillow: an input error, not ours."""
    deep = Image.new("I;16", (300, 40))
    deep.paste(60000, (0, 0, 150, 40))
    deep.save(tmp_path / "deep.png")
    url = load_image_data_url("deep.png", tmp_path, max_side=64)
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as shown:
        assert shown.size == (64, 9) and shown.convert("L").getpixel((0, 0)) == 255
        assert shown.convert("L").getpixel((63, 0)) == 0
    dds = bytearray(b"DDS " + struct.pack("<7I", 124, 0x1007, 4, 4, 0, 0, 0) + bytes(44)
                    + struct.pack("<8I", 32, 0, 0, 0, 0, 0, 0, 0) + bytes(20) + bytes(64))
    (tmp_path / "bad.dds").write_bytes(bytes(dds))
    with pytest.raises(ImageError) as bad:
        load_image_data_url("bad.dds", tmp_path)
    assert bad.value.cause == "input" and "corrupt or unsupported image" in str(bad.value)


def test_items_beyond_the_alphabet_or_blank_are_input_errors(tmp_path, fake_server):
    items = write_items(tmp_path / "items.jsonl", [
        {"id": "many", "question": "Which?", "choices": [str(i) for i in range(27)]},
        {"id": "   ", "question": "Which?"},
        {"id": "noimage", "question": "Which?", "image": ""},
        {"id": "fine", "question": "Which?", "choices": [str(i) for i in range(26)]}])
    out = tmp_path / "run"
    proc = stagewise("generate", items, "--out", out, "--model", "hosted_vllm/fake", "--api-base",
                     fake_server.api_base, "--no-progress")
    assert proc.returncode == 3
    rows = {r["id"]: r for r in read_jsonl(out / "results.jsonl")}
    assert rows["fine"]["status"] == "ok"
    assert "27 choices: at most 26" in rows["many"]["error"]
    assert "an image must name a file or URL" in rows["noimage"]["error"]
    blank = [r for r in rows.values() if "an id must not be blank" in (r["error"] or "")]
    assert len(blank) == 1 and blank[0]["id"].startswith("line-")
    assert {r["error_cause"] for r in rows.values() if r["status"] == "error"} == {"input"}
