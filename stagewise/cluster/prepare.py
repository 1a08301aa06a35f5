"""The items still to run (JSON lines, as the driver read them from ITEMS.jsonl) to the actors' input,
their images loaded.

Runs as a Ray Data map step pinned to the driver's node (where ITEMS.jsonl and the images named by
local path are), so the actors, on any node, get each image in the batch as a data URL and never
need the driver's files. An image that cannot be loaded travels as its error and cause, which the
actor turns into the item's error row, as the local path does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from engine.images import ImageError, load_image_data_url
from engine.items import Item


def prepare_batch(batch: dict[str, Any], *, todo: dict[str, int], base_dir: str,
                  max_image_side: int) -> dict[str, list[str]]:
    """The driver's items to run (`todo`: id → which attempt at it this is), each with image_url, or
    image_error and its cause (a URL that failed for the network's reason is retried by a rerun)."""
    out: dict[str, list[Any]] = {"line": [], "image_url": [], "image_error": [], "image_error_cause": [],
                                 "attempt": []}
    for line in batch["text"].tolist():
        item = Item.model_validate(orjson.loads(line))  # valid: the driver read and wrote it
        url, error, cause = "", "", ""
        if item.image:
            try:
                url = load_image_data_url(item.image, Path(base_dir), max_image_side)
            except ImageError as exc:
                error, cause = str(exc), exc.cause
        out["line"].append(line)
        out["image_url"].append(url)
        out["image_error"].append(error)
        out["image_error_cause"].append(cause)
        out["attempt"].append(todo[item.id])
    return out
