"""The items still to run (JSON lines, as the driver read them from ITEMS.jsonl) to the actors' input,
their images loaded.

Runs as a Ray Data map step pinned to the driver's node (where ITEMS.jsonl and the images named by
local path are), so the actors, on any node, get each image in the batch as a data URL and never
need the driver's files. An image that cannot be loaded travels as its error, which the actor turns
into the item's error row (`input`), as the local path does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from engine.images import ImageError, load_image_data_url
from engine.items import Item


def prepare_batch(batch: dict[str, Any], *, todo: dict[str, int], base_dir: str,
                  max_image_side: int) -> dict[str, list[str]]:
    """Keep the lines whose id is in `todo` (id → which attempt at it this is; the driver read the
    file first: done ids, repeats and bad lines are not in it); add image_url / image_error."""
    out: dict[str, list[Any]] = {"line": [], "image_url": [], "image_error": [], "attempt": []}
    for line in batch["text"].tolist():
        try:
            item = Item.model_validate(orjson.loads(line))
        except (ValueError, ValidationError):
            continue  # a bad line: the driver wrote its row already
        if item.id not in todo:
            continue
        url, error = "", ""
        if item.image:
            try:
                url = load_image_data_url(item.image, Path(base_dir), max_image_side)
            except ImageError as exc:
                error = str(exc)
        out["line"].append(line)
        out["image_url"].append(url)
        out["image_error"].append(error)
        out["attempt"].append(todo[item.id])
    return out
