"""Turn an item's image reference into a size-capped data URL the provider can take.

Paths (relative to ITEMS.jsonl's folder, or absolute), http(s) URLs and data URLs are accepted; each is
opened with Pillow, so a missing or corrupt image fails here, for its own item, with a clear reason.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
from pathlib import Path

import aiohttp
import yarl
from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_SIDE = 1024


class ImageError(ValueError):
    """An image that cannot be used; `cause` is "input" (rerunning cannot help) unless fetching a URL
    failed for the network's or the server's reason, which a rerun retries like a failed model call."""

    def __init__(self, message: str, cause: str = "input"):
        super().__init__(message)
        self.cause = cause


FETCH_TIMEOUT_S = 60.0  # one image URL, whole: a server that trickles bytes cannot hold its item longer
MAX_IMAGE_BYTES = 64 * 2 ** 20


def _fetch_error(ref: str, exc: BaseException, timeout_s: float = FETCH_TIMEOUT_S) -> ImageError:
    """A failed URL fetch: the URL's own fault (a 4xx, a URL that cannot be sent) is input; the server's
    or the network's (5xx, 408, 429, a timeout, a refused or dropped connection) a rerun retries."""
    if isinstance(exc, aiohttp.ClientResponseError):
        cause = "server" if exc.status >= 500 or exc.status in (408, 429) else "input"
        return ImageError(f"cannot fetch {ref[:200]}: HTTP {exc.status} {exc.message}", cause)
    if isinstance(exc, TimeoutError):
        return ImageError(f"cannot fetch {ref[:200]}: no whole image within {timeout_s:g} s", "timeout")
    if isinstance(exc, (aiohttp.InvalidURL, ValueError)):
        return ImageError(f"cannot fetch {ref[:200]}: not a URL that can be sent ({exc})")
    return ImageError(f"cannot fetch {ref[:200]}: {exc or type(exc).__name__}", "connection")


async def fetch(ref: str, timeout_s: float = FETCH_TIMEOUT_S, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """An http(s) image on the event loop: one deadline for the whole fetch, at most `max_bytes`, and a
    cancelled item (Ctrl-C) stops it at once, where a fetching thread would hold the exit."""
    try:
        host = yarl.URL(ref).raw_host or ""
    except ValueError as exc:
        raise _fetch_error(ref, exc) from None
    if not re.fullmatch(r"[A-Za-z0-9._\-]+|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+", host):  # no DNS lookup can help
        raise ImageError(f"cannot fetch {ref[:200]}: {host!r} is not a host name")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s),
                                         trust_env=True) as session:  # proxies from the environment
            async with session.get(ref, raise_for_status=True) as resp:
                if (resp.content_length or 0) > max_bytes:
                    raise ImageError(f"image at {ref[:200]} is {resp.content_length} bytes: at most {max_bytes}")
                data = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    data += chunk
                    if len(data) > max_bytes:
                        raise ImageError(f"image at {ref[:200]} is over {max_bytes} bytes")
                return bytes(data)
    except ImageError:
        raise
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        raise _fetch_error(ref, exc, timeout_s) from None


def _read_bytes(ref: str, base_dir: Path) -> bytes:
    """A data URL's or a file's bytes (URLs: `fetch`)."""
    if ref.startswith("data:"):
        header, _, payload = ref.partition(",")
        if ";base64" not in header:
            raise ImageError("data URL is not base64")
        try:
            return base64.b64decode(payload, validate=False)
        except binascii.Error as exc:
            raise ImageError(f"data URL does not decode: {exc}") from None
    path = Path(ref)
    if not path.is_absolute():
        path = base_dir / path
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"image file not found: {path}") from None
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a path no file can have, e.g. with a NUL byte
        raise ImageError(f"cannot read image {str(path)[:80]!r}: {exc}") from None


def _is_url(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


async def load_image(ref: str, base_dir: Path, max_side: int = DEFAULT_MAX_SIDE) -> str:
    """The data URL of an item's image, in a run: a URL fetched on the event loop, files read and every
    image decoded on a worker thread (a large image never stalls the loop)."""
    if _is_url(ref):
        data = await fetch(ref)
        return await asyncio.to_thread(to_data_url, data, ref, max_side)
    return await asyncio.to_thread(load_image_data_url, ref, base_dir, max_side)


def load_image_data_url(ref: str, base_dir: Path, max_side: int = DEFAULT_MAX_SIDE) -> str:
    """The same outside an event loop (a Ray task, a script)."""
    data = asyncio.run(fetch(ref)) if _is_url(ref) else _read_bytes(ref, base_dir)
    return to_data_url(data, ref, max_side)


def to_data_url(data: bytes, ref: str, max_side: int = DEFAULT_MAX_SIDE) -> str:
    """Open, verify, downscale (longest side ≤ max_side) and re-encode as a PNG or JPEG data URL."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()  # catches truncated and corrupt files before we decode them
        image = Image.open(io.BytesIO(data))
        image.load()
        has_alpha = image.mode in ("RGBA", "LA", "P", "PA")
        if image.mode.startswith("I"):  # 16- and 32-bit greys: to 8 bits, scaled by the brightest value
            image = image.convert("I")
            top = image.getextrema()[1]
            image = image.point(lambda v: v * 255 / top) if top > 255 else image
            image = image.convert("L")
        if image.mode not in ("RGB", "RGBA"):  # before resizing, which some modes (16-bit) cannot do
            image = image.convert("RGBA" if has_alpha else "RGB")
        if max(image.size) > max_side:
            image.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        fmt = "PNG" if has_alpha or image.size[0] * image.size[1] <= 256 * 256 else "JPEG"
        image.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    except Image.DecompressionBombError as exc:  # more pixels than Pillow will decode
        raise ImageError(f"image too large {ref[:80]!r}: {exc}") from None
    except MemoryError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"corrupt or unsupported image {ref[:80]!r}: not an image format Pillow reads") from None
    except Exception as exc:  # Pillow's decoders raise what they raise (OSError, SyntaxError, EOFError,
        # NotImplementedError, struct.error...): each is an image this item cannot use, not our bug
        raise ImageError(f"corrupt or unsupported image {ref[:80]!r}: {type(exc).__name__}: {exc}") from None
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode()}"
