"""`hf:` — the transformers backend on the tiny models trainer/tiny.py builds, both architectures.

Random weights write gibberish, so these check structure and equalities (batched == one at a time,
same seed == same samples), never text. About a minute and a half on 2 cores.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import math
import threading

import image_probe
import pytest
from conftest import read_jsonl, stagewise, write_items

pytest.importorskip("torch")
pytest.importorskip("transformers")

from engine.backends import make_backend  # noqa: E402
from engine.errors import UsageError  # noqa: E402
from engine.types import Request  # noqa: E402

ARCHS = ("mllama", "llava")
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny models: 1 thread is faster, and steady when the cores are shared
GRAPHS = ("chain", "best_of_n", "sentence_beam", "stage_beam")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    from trainer.tiny import build

    root = tmp_path_factory.mktemp("tiny")
    return {arch: str(build(root / arch, arch)) for arch in ARCHS}


@pytest.fixture(autouse=True)
def one_thread():
    """In-process tests run the model in this process: one torch thread, restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def chart(tmp_path_factory):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 64), "white")
    draw = ImageDraw.Draw(image)
    for i, (colour, height) in enumerate([("red", 40), ("blue", 20), ("green", 55)]):
        draw.rectangle([10 + i * 28, 64 - height, 30 + i * 28, 64], fill=colour)
    path = tmp_path_factory.mktemp("img") / "chart.png"
    image.save(path)
    return path


def data_url(path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def user(text: str, image: str | None = None) -> dict:
    if image is None:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": text}]}


def mixed_requests(image: str, temperature: float = 0.0) -> list[Request]:
    """Different lengths, images and not, a continued assistant prefix, n > 1, a stop string."""
    kw = {"temperature": temperature, "seed": 11}
    return [
        Request([user("Which bar is the tallest?", image)], max_tokens=10, stop=("</SUMMARY>",), **kw),
        Request([user("Describe every bar of the chart in detail, from left to right.", image)], n=2, max_tokens=7, **kw),
        Request([user("What is two plus two?")], max_tokens=9, **kw),
        Request([user("Which bar?", image), {"role": "assistant", "content": "<SUMMARY> I will"}],
                continue_final=True, max_tokens=8, **kw),
        Request([user("Count the bars.", image)], n=3, max_tokens=6, **kw),
    ]


def texts(outs) -> list[list[str]]:
    return [[c.text for c in o] for o in outs]


async def batched_and_single(model_dir: str, requests: list[Request]):
    backend = make_backend(f"hf:{model_dir}")
    try:
        batched = await asyncio.gather(*(backend.complete(r) for r in requests))
        sizes = list(backend.batches)
        backend.max_batch = 1  # the reference's way: one request, one generate
        single = [await backend.complete(r) for r in requests]
    finally:
        await backend.aclose()
    return batched, single, sizes


@pytest.mark.parametrize("arch", ARCHS)
async def test_batched_greedy_equals_one_at_a_time(tiny_models, chart, arch):
    requests = mixed_requests(data_url(chart))
    batched, single, sizes = await batched_and_single(tiny_models[arch], requests)
    assert sizes[0] == sum(r.n for r in requests), "all concurrent requests went into one batch"
    assert texts(batched) == texts(single)
    assert [[c.completion_tokens for c in o] for o in batched] == [[c.completion_tokens for c in o] for o in single]
    for request, out in zip(requests, batched):
        assert len(out) == request.n
        assert out[0].prompt_tokens > 0 and all(c.prompt_tokens == 0 for c in out[1:])
        assert all(0 < c.completion_tokens <= request.max_tokens for c in out)
    assert batched[1][0].text == batched[1][1].text, "greedy: n samples are the same text"
    assert texts([batched[3]]) != texts([batched[0]]), "a continued prefix changes the output"


@pytest.mark.parametrize("arch", ARCHS)
async def test_seeded_sampling_is_per_row_and_repeatable(tiny_models, chart, arch):
    requests = mixed_requests(data_url(chart), temperature=0.9)
    batched, single, _ = await batched_and_single(tiny_models[arch], requests)
    assert texts(batched) == texts(single), "a row's samples do not depend on its batch"
    assert len({c.text for c in batched[4]}) > 1, "n samples differ from each other"
    backend = make_backend(f"hf:{tiny_models[arch]}")
    try:
        other = await backend.complete(Request([user("Count the bars.", data_url(chart))], n=3, max_tokens=6,
                                               temperature=0.9, seed=12))
    finally:
        await backend.aclose()
    assert other[0].text == batched[4][1].text, "sample i of seed s is sample 0 of seed s + i"


async def test_more_samples_later_asks_only_the_new_ones_and_matches_a_fresh_request(tiny_models, chart, tmp_path):
    """--n 2 then --n 4 on one cache: the second request asks the model for samples 2 and 3 only (seed
    s + 2, n 2), and the four equal a fresh n = 4 request's."""
    from engine.cache import Cache
    from engine.client import Client
    from engine.trace import Tracer

    ask = Request([user("Count the bars.", data_url(chart))], max_tokens=6, temperature=0.9, seed=21)
    backend = make_backend(f"hf:{tiny_models['llava']}")
    cache = Cache(tmp_path / "cache.sqlite")
    client = Client(backend, tracer=Tracer(None), cache=cache)
    try:
        two = await client.complete(dataclasses.replace(ask, n=2))
        four = await client.complete(dataclasses.replace(ask, n=4))
        asked = list(backend.batches)
        fresh = await Client(backend, tracer=Tracer(None)).complete(dataclasses.replace(ask, n=4))
    finally:
        await client.aclose()
        cache.close()
    assert asked == [2, 2], "rows generated: the first request's two, then only the two new samples"
    assert [c.cached for c in four] == [True, True, False, False]
    assert texts([four]) == texts([fresh]) and texts([four[:2]]) == texts([two])
    assert len(set(texts([four])[0])) > 1


async def test_stop_string_ends_the_row_and_is_not_returned(tiny_models):
    backend = make_backend(f"hf:{tiny_models['llava']}")
    try:
        [free] = await backend.complete(Request([user("Which bar?")], temperature=0, max_tokens=16))
        assert free.finish_reason == "length" and free.completion_tokens == 16
        stop = next(free.text[i:i + 2] for i in range(2, len(free.text) - 2) if free.text[i:i + 2].isascii()
                    and free.text[i:i + 2].strip())
        [cut] = await backend.complete(Request([user("Which bar?")], temperature=0, max_tokens=16, stop=(stop,)))
    finally:
        await backend.aclose()
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[:free.text.index(stop)]
    assert cut.completion_tokens < 16


async def test_logprobs_are_the_models_own_top_alternatives(tiny_models, chart):
    """A judge's request asks for logprobs: each generated token comes with its top alternatives (the
    greedy token is the most likely one), batched with a request that asks none and is unchanged."""
    backend = make_backend(f"hf:{tiny_models['llava']}")
    assert backend.capabilities.logprobs
    asked = Request([user("Which bar?", data_url(chart))], temperature=0, max_tokens=8, logprobs=5)
    plain = Request([user("Which bar?", data_url(chart))], temperature=0, max_tokens=8)
    try:
        [with_lp], [without] = await asyncio.gather(backend.complete(asked), backend.complete(plain))
    finally:
        await backend.aclose()
    assert without.logprobs is None and with_lp.text == without.text
    assert len(with_lp.logprobs) == with_lp.completion_tokens == 8
    for token, top in with_lp.logprobs:
        assert 1 <= len(top) <= 5 and max(top, key=top.get) == token
        assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-5


async def test_generating_and_decoding_images_never_run_on_the_event_loop(tiny_models, chart):
    """The loop keeps serving other items while a batch runs: the model's forward passes (a torch
    forward hook) and the image decoding (a Pillow plugin, tests/image_probe.py) record their thread."""
    image_probe.register()
    loop_thread = threading.get_ident()
    forward_threads: list[int] = []
    backend = make_backend(f"hf:{tiny_models['mllama']}")
    try:
        await backend.complete(Request([user("warm up")], max_tokens=1))  # loads the model
        backend._runner.model.register_forward_pre_hook(lambda *_: forward_threads.append(threading.get_ident()))
        image_probe.threads.clear()
        probed = await asyncio.gather(*(backend.complete(r) for r in mixed_requests(
            image_probe.data_url(chart.read_bytes()))))
        plain = await asyncio.gather(*(backend.complete(r) for r in mixed_requests(data_url(chart))))
    finally:
        await backend.aclose()
    assert image_probe.threads and forward_threads
    assert loop_thread not in image_probe.threads, "an image was decoded on the event loop"
    assert loop_thread not in forward_threads, "the model ran on the event loop"
    assert texts(probed) == texts(plain), "the probe image is the chart, decoded"


async def test_without_a_device_the_model_goes_where_torch_sees_a_gpu(tiny_models):
    """No `device=`: the GPU where torch sees one, else the CPU (this machine's case); a device given
    in the model string still wins."""
    import torch

    from engine.backends.hf_runner import default_device

    for spec, expected in ((f"hf:{tiny_models['llava']}", default_device(torch)),
                           (f"hf:{tiny_models['llava']}?device=cpu", "cpu")):
        backend = make_backend(spec)
        try:
            await backend.complete(Request([user("hi")], max_tokens=1))
            assert backend._runner.device.type == expected
        finally:
            await backend.aclose()
    assert default_device(torch) == ("cuda" if torch.cuda.is_available() else "cpu")


def test_model_string_errors(tmp_path):
    with pytest.raises(UsageError, match="no such model folder"):
        make_backend(f"hf:{tmp_path / 'missing'}")
    with pytest.raises(UsageError, match="no config.json"):
        make_backend(f"hf:{tmp_path}")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UsageError, match="unknown option"):
        make_backend(f"hf:{tmp_path}?batch=3")
    with pytest.raises(UsageError, match="not a valid int"):
        make_backend(f"hf:{tmp_path}?max_batch=many")
    backend = make_backend(f"hf:{tmp_path}?max_batch=4&window_ms=0")
    assert backend.max_batch == 4 and backend.window_s == 0
    assert backend.capabilities.continue_assistant and backend.capabilities.n_per_request


def run_graph(tmp_path, chart, model_dir: str, graph: str, mode: str):
    (tmp_path / "chart.png").write_bytes(chart.read_bytes())
    items = write_items(tmp_path / "items.jsonl", [
        {"id": "q1", "question": "Which bar is the tallest?", "image": "chart.png",
         "choices": ["red", "blue", "green"], "answer": "C"},
        {"id": "q2", "question": "What is two plus two?", "answer": "4"},
    ])
    out = tmp_path / "run"
    stagewise("generate", items, "--out", out, "--model", f"hf:{model_dir}", "--graph", graph, "--mode", mode,
              "--n", "2", "--max-tokens", "12", "--max-sentences", "2", "--no-progress", env=ONE_THREAD, check=True)
    rows = read_jsonl(out / "results.jsonl")
    assert sorted(r["id"] for r in rows) == ["q1", "q2"]
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    calls = [t for t in read_jsonl(out / "traces.jsonl") if t["event"] == "llm.call"]
    assert all(t["status"] == "ok" for t in calls)
    assert sum(r["usage"]["calls"] for r in rows) == len(calls) > 0
    assert all(t["prompt_tokens"] > 0 for t in calls if t["sample"] == 0)
    assert all(t["completion_tokens"] > 0 for t in calls)
    return calls


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_graph_end_to_end_on_hf(tmp_path, tiny_models, chart, arch, graph):
    """--mode full: stages continue the exact assistant prefix, as on vLLM."""
    calls = run_graph(tmp_path, chart, tiny_models[arch], graph, "full")
    if graph in ("sentence_beam", "stage_beam"):
        assert any(t.get("continued") for t in calls if t["role"] == "generate")
    if graph == "chain":
        assert len(calls) == 2


def test_staged_mode_end_to_end_on_hf(tmp_path, tiny_models, chart):
    calls = run_graph(tmp_path, chart, tiny_models["llava"], "stage_beam", "staged")
    assert {t["role"] for t in calls} >= {"generate", "judge"}


@pytest.mark.parametrize("arch", ARCHS)
async def test_an_image_is_encoded_once_for_every_request_that_shows_it(tiny_models, chart, arch):
    backend = make_backend(f"hf:{tiny_models[arch]}")
    try:
        await backend.complete(Request([user("warm up")], max_tokens=1))
        runner = backend._runner
        assert runner.vision in ("features", "mllama")
        base = runner.model.base_model
        tower = getattr(base, "vision_tower", None) or base.vision_model  # LLaVA's, Mllama's
        passes = []
        tower.register_forward_hook(lambda *_: passes.append(1))
        requests = mixed_requests(data_url(chart))
        await asyncio.gather(*(backend.complete(r) for r in requests))
        await backend.complete(requests[0])
    finally:
        await backend.aclose()
    assert len(passes) == 1, "one image, many requests and rows: one pass of the vision tower"


async def test_the_per_row_processor_path_agrees_with_pre_encoded_images(tiny_models, chart):
    """Architectures we cannot pre-encode for (e.g. Qwen2-VL) get pixels per row: same tokens."""
    requests = mixed_requests(data_url(chart))
    backend = make_backend(f"hf:{tiny_models['llava']}")
    try:
        pre = await asyncio.gather(*(backend.complete(r) for r in requests))
        backend._runner.vision = "processor"
        per_row = await asyncio.gather(*(backend.complete(r) for r in requests))
    finally:
        await backend.aclose()
    assert texts(per_row) == texts(pre)
