"""A synthetic stagewise run (bar charts + four-stage answers) for smoke tests and benchmarks.

Each item is a 56 px chart of three coloured bars; the answer is the tallest bar's colour. The format
is learned in ~100 steps and the answer needs the image, so one file exercises both halves of a VLM.
Writes DIR/results.jsonl rows exactly as ``stagewise generate`` does, images under DIR/img/.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 30), "blue": (30, 30, 220), "yellow": (230, 200, 0)}
QUESTION = "Which colour bar is the tallest?"


def bar_chart(colours: list[str], heights: list[int], size: int = 56):
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(im)
    w = size // (len(colours) + 1)
    for j, (c, h) in enumerate(zip(colours, heights)):
        x = 4 + j * (w + 4)
        draw.rectangle([x, size - 1 - h, x + w - 1, size - 1], fill=COLOURS[c])
    return im


def response(colours: list[str], top: str) -> str:
    return (f"<SUMMARY> I will compare the heights of the bars. </SUMMARY>\n\n"
            f"<CAPTION> The chart shows {', '.join(colours)} bars, from left to right. </CAPTION>\n\n"
            f"<REASONING> The {top} bar reaches higher than the others. </REASONING>\n\n"
            f"<CONCLUSION> {top} </CONCLUSION>")


def write_run(out, n: int = 32, seed: int = 0) -> Path:
    """Write n ok rows (images under out/img) to out/results.jsonl; return the results file."""
    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        colours = rng.sample(list(COLOURS), 3)
        heights = rng.sample([12, 22, 32, 44], 3)
        top = colours[heights.index(max(heights))]
        bar_chart(colours, heights).save(out / "img" / f"{i}.png")
        rows.append({"id": f"bars-{i}", "status": "ok", "error": None, "graph": "chain", "model": "synthetic",
                     "question": QUESTION, "image": f"img/{i}.png",
                     "stages": {}, "response": response(colours, top), "answer": top,
                     "reference": top, "correct": True})
    path = out / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
