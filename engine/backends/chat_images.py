"""OpenAI-style `image_url` parts of chat messages → decoded images, for backends that run a model in
this process (`hf:`, `vllm:`) and hand it the images themselves. CPU work: callers run it off the
event loop."""
from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

from engine.errors import BadRequest


def split_images(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any], list[str]]:
    """OpenAI `image_url` parts → `{"type": "image"}` placeholders for the chat template, plus the
    decoded images and their cache keys (a hash of the URL)."""
    out, images, keys = [], [], []
    for m in messages:
        content = m.get("content")
        if not isinstance(content, list):
            out.append(m)
            continue
        parts = []
        for part in content:
            if part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url", "")
                images.append(decode_image(url))
                keys.append(hashlib.sha1(url.encode()).hexdigest())
                parts.append({"type": "image"})
            else:
                parts.append(part)
        out.append({**m, "content": parts})
    return out, images, keys


def decode_image(url: str):
    from PIL import Image

    if not url.startswith("data:") or ";base64," not in url:
        raise BadRequest("hf: images must be base64 data URLs (the engine sends them that way)")
    try:
        return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
    except Exception as exc:  # noqa: BLE001
        raise BadRequest(f"cannot decode image: {exc}") from None
