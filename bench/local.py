"""Questions/min of stage_beam (N=2) on an in-process `hf:` model: batched vs one call at a time.

    python bench/local.py [--model-dir DIR | --arch llava|mllama [--hidden 512]] [--items 8]
                          [--max-tokens 32] [--device cpu|cuda] [--dtype auto] [--threads 1]

One backend, one loaded model, one event loop; the runs differ only in how generate is called:
- batched: concurrent requests gathered into left-padded batches (max_batch 32), image states
  cached per image — what `--model hf:DIR` does;
- one-at-a-time: max_batch 1, image states still cached;
- reference: max_batch 1 and no image cache — the LLaVA-CoT code's way (one generate per call,
  the vision tower run every call).
Every item is in flight at once (the engine's default). Without --model-dir a tiny random model is
built (trainer/tiny.py; --hidden scales it, e.g. for a GPU). Prints questions/min and speed-ups.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.backends.hf import HFBackend  # noqa: E402
from engine.client import Client  # noqa: E402
from engine.limits import Limits  # noqa: E402
from engine.loop import run  # noqa: E402
from engine.runner import run_items  # noqa: E402
from engine.trace import Tracer  # noqa: E402
from search import Roles, Settings, build_graph  # noqa: E402
from stages.agent import Sampling  # noqa: E402

QUESTIONS = ["Which bar is the tallest?", "Which bar is the shortest?", "How many bars are there?",
             "Is the left bar taller than the right one?", "What colour is the middle bar?"]


def write_items(folder: Path, count: int) -> Path:
    from PIL import Image, ImageDraw

    rows = []
    for i in range(count):
        image = Image.new("RGB", (224, 160), "white")
        draw = ImageDraw.Draw(image)
        for j, colour in enumerate(("red", "blue", "green")):
            height = 30 + (17 * (i + 1) * (j + 2)) % 110
            draw.rectangle([30 + j * 60, 160 - height, 70 + j * 60, 160], fill=colour)
        image.save(folder / f"chart{i}.png")
        rows.append({"id": f"q{i}", "question": QUESTIONS[i % len(QUESTIONS)], "image": f"chart{i}.png",
                     "choices": ["red", "blue", "green"], "answer": "A"})
    path = folder / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


async def one_run(backend: HFBackend, items: Path, out: Path, max_tokens: int) -> tuple[float, int, list[int]]:
    out.mkdir(parents=True, exist_ok=True)
    tracer = Tracer(out / "traces.jsonl")
    client = Client(backend, tracer=tracer, limits=Limits(256))  # no cache: every call is generated
    settings = Settings(mode="full", n=2, sampling=Sampling(0.6, 0.9, max_tokens, 0))
    solve = build_graph("stage_beam", settings, Roles(client, client))
    backend.batches.clear()
    started = time.perf_counter()
    summary = await run_items(items, out, solve, tracer=tracer, meta={"graph": "stage_beam"}, concurrency=256,
                              show_progress=False)
    wall = time.perf_counter() - started
    tracer.close()
    return wall, summary["calls"], list(backend.batches)


async def bench(model_dir: str, items: Path, tmp: Path, args: argparse.Namespace) -> None:
    backend = HFBackend(model_dir, device=args.device, dtype=args.dtype, max_batch=args.max_batch,
                        threads=args.threads)
    from engine.types import Request

    await backend.complete(Request([{"role": "user", "content": "warm up"}], max_tokens=2))  # load off the clock
    count = sum(1 for _ in items.open())
    modes = [("batched", args.max_batch, 64), ("one-at-a-time", 1, 64), ("reference", 1, 0)]
    walls = {}
    for name, max_batch, image_cache in modes:
        backend.max_batch = max_batch
        backend._runner.image_cache = image_cache  # noqa: SLF001 — a benchmark knob, not an API
        backend._runner.features.clear()  # noqa: SLF001
        wall, calls, sizes = await one_run(backend, items, tmp / name, args.max_tokens)
        walls[name] = wall
        mean = sum(sizes) / max(1, len(sizes))
        print(f"{name:<14} {count / wall * 60:8.1f} questions/min  {wall:7.1f} s  {calls} calls  "
              f"{len(sizes)} generate calls, {mean:.1f} rows each", flush=True)
    await backend.aclose()
    print(f"speed-up: batched / one-at-a-time {walls['one-at-a-time'] / walls['batched']:.2f}x, "
          f"batched / reference {walls['reference'] / walls['batched']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=None, help="a model folder (default: build a tiny one)")
    ap.add_argument("--arch", default="llava", choices=("llava", "mllama"))
    ap.add_argument("--hidden", type=int, default=None, help="tiny model's text width (a multiple of 64)")
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_dir = a.model_dir
        if model_dir is None:
            from trainer.tiny import build

            model_dir = str(build(tmp / "model", a.arch, hidden=a.hidden))
        items = write_items(tmp, a.items)
        import torch

        label = a.model_dir or f"tiny {a.arch} (hidden {a.hidden or 'default'})"
        print(f"model {label} on {a.device}, "
              f"torch threads {a.threads or torch.get_num_threads()}; stage_beam N=2, mode full, {a.items} items, "
              f"max {a.max_tokens} new tokens a call", flush=True)
        run(bench(model_dir, items, tmp, a))


if __name__ == "__main__":
    main()
