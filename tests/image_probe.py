"""A PNG in disguise that records which thread decodes it.

It is registered through Pillow's public plugin registry (`Image.register_open`), so a test sees where
a backend decodes an image — on the event loop's thread or another — without touching the backend.
Also imported by scripts that run inside vLLM's venv (tests/test_vllm_inprocess.py).
"""
from __future__ import annotations

import base64
import io
import threading

from PIL import Image, PngImagePlugin

MAGIC = b"STAGEWISE-PROBE\n"
FORMAT = "STAGEWISE_PROBE"
threads: list[int] = []  # threading.get_ident() of every decode, in order


class ProbeImageFile(PngImagePlugin.PngImageFile):
    format = FORMAT
    format_description = "a PNG behind a marker, recording the decoding thread"

    def _open(self) -> None:
        threads.append(threading.get_ident())
        self.fp.seek(len(MAGIC))  # the PNG's offsets stay those of the whole file
        super()._open()


def register() -> None:
    Image.register_open(FORMAT, ProbeImageFile, lambda prefix: prefix[:len(MAGIC)] == MAGIC)


def data_url(png: bytes) -> str:
    """A data URL of the PNG `png` in probe form (the engine's backends decode data URLs)."""
    return "data:image/png;base64," + base64.b64encode(MAGIC + png).decode()


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
