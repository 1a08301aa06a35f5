"""`vllm:` in-process and `stagewise serve`.

vLLM pins its own torch and transformers, so it lives in its own venv; the tests that need it run
stagewise *inside* that venv in a subprocess (PYTHONPATH = this checkout) and are skipped unless
STAGEWISE_VLLM_VENV names it (CI: ~/.cache/stagewise/venv-vllm, made by `.ci/vllm_server.sh prepare`;
under CI=true they fail instead). That venv needs stagewise's small core deps (see CORE_DEPS) and, for
the tiny LLaVA, the torchvision shim (prepare installs both). About 2.5 minutes on 2 cores: three
vLLM start-ups. The usage-error tests need no vLLM.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, read_jsonl, write_items

VENV = os.environ.get("STAGEWISE_VLLM_VENV")
VPY = str(Path(VENV) / "bin" / "python") if VENV else None
CORE_DEPS = {"aiohttp": "aiohttp", "pydantic": "pydantic", "structlog": "structlog", "orjson": "orjson",
             "rich": "rich", "PIL": "pillow", "uvloop": "uvloop"}
needs_vllm = pytest.mark.skipif(not VENV and not os.environ.get("CI"),
                                reason="STAGEWISE_VLLM_VENV is not set (a venv with vllm)")
GRAPHS = "chain,best_of_n,sentence_beam,stage_beam"
OPTIONS = "dtype=float32&max_model_len=2048"


def serve(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stagewise.serve", *args], check=False, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT, timeout=120)


# --- no vLLM needed -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Just the config.json each check reads (serve decides before any weights load)."""
    root = tmp_path_factory.mktemp("configs")
    dirs = {}
    for arch in ("MllamaForConditionalGeneration", "LlavaForConditionalGeneration"):
        d = root / arch
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"architectures": [arch]}))
        dirs[arch] = d
    return dirs


def test_serve_mllama_says_use_hf_and_exits_2(model_dirs):
    r = serve(str(model_dirs["MllamaForConditionalGeneration"]))
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert "Mllama" in line and "--model hf:" in line


def test_serve_without_vllm_exits_2_with_one_line(model_dirs, tmp_path):
    r = serve(str(model_dirs["LlavaForConditionalGeneration"]), "--python", str(tmp_path / "no-python"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "hf:" in r.stderr
    r = serve(str(tmp_path / "missing"))
    assert r.returncode == 2 and "not a model folder" in r.stderr
    if importlib.util.find_spec("vllm") is None:
        r = serve(str(model_dirs["LlavaForConditionalGeneration"]), env={"STAGEWISE_VLLM_PYTHON": ""})
        assert r.returncode == 2 and "vLLM is not installed" in r.stderr


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_model_string_without_vllm_is_a_usage_error(model_dirs):
    from engine.backends import make_backend
    from engine.errors import UsageError

    with pytest.raises(UsageError, match="needs vLLM"):
        make_backend(f"vllm:{model_dirs['LlavaForConditionalGeneration']}")


# --- inside the vLLM venv -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_env() -> dict[str, str]:
    if not VENV:  # only under CI=true (needs_vllm skips otherwise)
        pytest.fail("STAGEWISE_VLLM_VENV is not set: .ci/run sets it to `bash .ci/vllm_server.sh prepare`'s venv")
    probe = "import importlib.util as u, json; print(json.dumps([m for m in %r if u.find_spec(m) is None]))"
    r = subprocess.run([VPY, "-c", probe % (["vllm", *CORE_DEPS],)], check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    missing = json.loads(r.stdout)
    if missing:
        pytest.fail(f"{VENV} lacks {', '.join(missing)}: pip install "
                    f"{' '.join(CORE_DEPS.get(m, m) for m in missing)} into it (it runs stagewise from this checkout)")
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_NO_USAGE_STATS": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from trainer.tiny import build

    return build(tmp_path_factory.mktemp("vllm") / "tiny-llava", "llava")


@pytest.fixture(scope="module")
def chart(tmp_path_factory) -> Path:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 64), "white")
    ImageDraw.Draw(image).rectangle([30, 10, 60, 64], fill="blue")
    path = tmp_path_factory.mktemp("img") / "chart.png"
    image.save(path)
    return path


BACKEND_CHECKS = textwrap.dedent("""
    import asyncio, base64, os, sys, threading
    from engine.backends import make_backend
    from engine.types import Request

    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    import image_probe

    model, image = sys.argv[1], sys.argv[2]
    url = "data:image/png;base64," + base64.b64encode(open(image, "rb").read()).decode()
    user = lambda t, img=True, url=url: {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": t}] if img else t}

    async def main():
        from engine.errors import UsageError
        try:
            make_backend(model.split("?")[0] + "?no_such_option=1")
            raise SystemExit("an unknown engine option was accepted")
        except UsageError:
            pass
        b = make_backend(model)
        assert b.capabilities.continue_assistant and b.capabilities.n_per_request
        ask = lambda msgs, **kw: b.complete(Request(msgs, **{"max_tokens": 12, **kw}))
        first = await ask([user("Which bar?")], n=3, seed=5, temperature=0.9)
        again = await ask([user("Which bar?")], n=3, seed=5, temperature=0.9)
        other = await ask([user("Which bar?")], n=3, seed=6, temperature=0.9)
        assert len(first) == 3 and [c.text for c in first] == [c.text for c in again]
        assert [c.text for c in first] != [c.text for c in other]
        assert first[0].prompt_tokens > 0 and all(c.prompt_tokens == 0 for c in first[1:])
        assert all(c.completion_tokens > 0 for c in first)
        [text] = await ask([user("Which bar?", img=False)], temperature=0)
        [seen] = await ask([user("Which bar?")], temperature=0)
        assert seen.prompt_tokens >= text.prompt_tokens + 16, "the image's tokens are in the prompt"
        [free] = await ask([user("Which bar?")], temperature=0, max_tokens=16)
        stop = next(free.text[i:i + 2] for i in range(2, len(free.text) - 2)
                    if free.text[i:i + 2].isascii() and free.text[i:i + 2].strip())
        [cut] = await ask([user("Which bar?")], temperature=0, max_tokens=16, stop=(stop,))
        assert cut.finish_reason == "stop" and cut.text == free.text[:free.text.index(stop)], (free, cut)
        [cont] = await ask([user("Which bar?"), {"role": "assistant", "content": "<SUMMARY> I will"}],
                           temperature=0, continue_final=True)
        assert cont.text != seen.text and cont.prompt_tokens > seen.prompt_tokens
        image_probe.register()  # the same chart, decoded by a Pillow plugin that records the thread
        [probed] = await ask([user("Which bar?", url=image_probe.data_url(open(image, "rb").read()))],
                             temperature=0)
        assert image_probe.threads, "the probe image was decoded"
        assert threading.get_ident() not in image_probe.threads, "the image was decoded on the event loop"
        assert probed.text == seen.text, "the decoded image is the one the model sees"
        await b.aclose()
        print("BACKEND OK")

    if __name__ == "__main__":
        asyncio.run(main())
""")


@needs_vllm
def test_vllm_backend_samples_seeds_stops_continues_and_decodes_images_off_the_loop(vllm_env, tiny_llava, chart, tmp_path):
    script = tmp_path / "checks.py"
    script.write_text(BACKEND_CHECKS)
    r = subprocess.run([VPY, str(script), f"vllm:{tiny_llava}?{OPTIONS}", str(chart)], check=False,
                       capture_output=True, text=True, env=vllm_env, cwd=ROOT, timeout=600)
    assert r.returncode == 0 and "BACKEND OK" in r.stdout, r.stderr[-4000:]


@needs_vllm
def test_every_graph_end_to_end_on_vllm_in_process(vllm_env, tiny_llava, chart, tmp_path):
    """One `stagewise compare` process: the four graphs share one engine."""
    (tmp_path / "chart.png").write_bytes(chart.read_bytes())
    items = write_items(tmp_path / "items.jsonl", [
        {"id": "q1", "question": "Which bar is the tallest?", "image": "chart.png", "choices": ["a", "b"], "answer": "A"},
        {"id": "q2", "question": "What is two plus two?", "answer": "4"}])
    out = tmp_path / "run"
    r = subprocess.run([VPY, "-m", "stagewise", "compare", str(items), "--out", str(out), "--model",
                        f"vllm:{tiny_llava}?{OPTIONS}", "--graphs", GRAPHS, "--mode", "full", "--n", "2",
                        "--max-tokens", "12", "--max-sentences", "2", "--no-progress"],
                       check=False, capture_output=True, text=True, env=vllm_env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert (r.stdout + r.stderr).count("Initializing a V1 LLM engine") == 1, "the graphs share one engine"
    assert "Exception ignored" not in r.stderr, r.stderr[-2000:]
    for graph in GRAPHS.split(","):
        rows = read_jsonl(out / graph / "results.jsonl")
        assert sorted(x["id"] for x in rows) == ["q1", "q2"] and all(x["status"] == "ok" for x in rows), rows
        calls = [t for t in read_jsonl(out / graph / "traces.jsonl") if t["event"] == "llm.call"]
        assert calls and all(t["status"] == "ok" and t["completion_tokens"] > 0 for t in calls)
        assert sum(x["usage"]["calls"] for x in rows) == len(calls)
        if graph in ("sentence_beam", "stage_beam"):
            assert any(t.get("continued") for t in calls if t["role"] == "generate")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_vllm
def test_serve_starts_vllms_openai_server(vllm_env, tiny_llava, chart):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stagewise.serve", str(tiny_llava), "--port", str(port),
                             "--python", VPY, "--served-model-name", "tiny-llava", "--vllm-args",
                             "--max-model-len 2048 --dtype float32"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**vllm_env, "PYTHONPATH": ""}, start_new_session=True)
    try:
        deadline = time.time() + 300
        while True:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "no /health within 300 s"
            time.sleep(2)
        import base64

        url = "data:image/png;base64," + base64.b64encode(chart.read_bytes()).decode()
        body = {"model": "tiny-llava", "n": 2, "max_tokens": 8, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Which bar?"}]}]}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            reply = json.loads(resp.read())
        assert len(reply["choices"]) == 2 and reply["usage"]["prompt_tokens"] > 16
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
