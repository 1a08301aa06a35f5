"""OpenAI chat messages with an optional image, the one shape every backend accepts."""
from __future__ import annotations

from typing import Any


def user_message(text: str, image_url: str | None = None) -> dict[str, Any]:
    """A user turn; the image part comes first, as the reference feeds it (and so the prefix caches)."""
    if image_url is None:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                        {"type": "text", "text": text}]}


def assistant_message(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}
