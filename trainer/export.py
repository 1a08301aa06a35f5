"""Write stagewise results as LLaVA-CoT-100k rows, so our traces and the paper's data mix freely.

Exported rows are exactly the rows `stagewise train` would use (same filter, same counts); image paths
are written relative to the output file's folder, which is where `read_llava_cot` looks by default.
"""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from trainer.data import Counts, Example, read_results

FORMATS = ("llava-cot",)


def to_llava_cot(ex: Example, base: Path) -> dict:
    """{id, image, conversations}; the image is relative to `base` when it is a file."""
    image = ex.image if ex.image.startswith("data:") else os.path.relpath(ex.image, base)
    convs = []
    for user, assistant in ex.turns:
        convs += [{"from": "human", "value": user}, {"from": "gpt", "value": assistant}]
    return {"id": ex.id, "image": image, "conversations": convs}


RUN_FILES = ("results.jsonl", "traces.jsonl", "retried.jsonl", "summary.json", "options.json", "cache.sqlite",
             "ITEMS.jsonl")  # what a run folder holds: an export must never replace one


def export(results, out, image_root=None) -> Counts:
    """results.jsonl (or a run DIR) -> `out` (.jsonl, or a JSON array when it ends in .json)."""
    results, out = Path(results), Path(out)
    if results.is_dir():
        results = results / "results.jsonl"
    if out.is_dir():  # checked before anything is written: no stray out.tmp
        raise IsADirectoryError(f"{out} is a folder; the output is a file (.jsonl, or .json for an array)")
    if out.resolve() in {(results.parent / name).resolve() for name in RUN_FILES}:
        raise FileExistsError(errno.EEXIST, "is one of the run's own files: give --out another name", str(out))
    examples, counts = read_results(results, image_root=image_root)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.parent.resolve()
    rows = [to_llava_cot(ex, base) for ex in examples]
    tmp = out.with_name(out.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            if out.suffix == ".json":
                json.dump(rows, f, ensure_ascii=False, indent=1)
            else:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return counts
