"""Turn an item's image reference into a size-capped data URL the provider can take.

Paths (relative to ITEMS.jsonl's folder, or absolute), http(s) URLs and data URLs are accepted; each is
opened with Pillow, so a missing or corrupt image fails here, for its own item, with a clear reason.
"""
from __future__ import annotations

import base64
import binascii
import http.client
import io
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_SIDE = 1024


class ImageError(ValueError):
    """An image that cannot be used; `cause` is "input" (rerunning cannot help) unless fetching a URL
    failed for the network's or the server's reason, which a rerun retries like a failed model call."""

    def __init__(self, message: str, cause: str = "input"):
        super().__init__(message)
        self.cause = cause


def _fetch_cause(exc: BaseException) -> str:
    """The error cause of a failed URL fetch: the URL's own (a 4xx, a URL that cannot be sent), else the
    server's or the network's (5xx, 408, 429, a timeout, a refused or dropped connection)."""
    if isinstance(exc, urllib.error.HTTPError):
        return "server" if exc.code >= 500 or exc.code in (408, 429) else "input"
    if isinstance(exc, (ValueError, http.client.InvalidURL)):
        return "input"
    return "timeout" if isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError) \
        else "connection"


def _read_bytes(ref: str, base_dir: Path) -> bytes:
    if ref.startswith("data:"):
        header, _, payload = ref.partition(",")
        if ";base64" not in header:
            raise ImageError("data URL is not base64")
        try:
            return base64.b64decode(payload, validate=False)
        except binascii.Error as exc:
            raise ImageError(f"data URL does not decode: {exc}") from None
    if ref.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(ref, timeout=30) as resp:  # noqa: S310 (user-given URL)
                return resp.read()
        except (OSError, ValueError, http.client.HTTPException) as exc:  # also a URL that cannot be sent
            raise ImageError(f"cannot fetch {ref[:200]}: {exc}", _fetch_cause(exc)) from None
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


def load_image_data_url(ref: str, base_dir: Path, max_side: int = DEFAULT_MAX_SIDE) -> str:
    """Open, verify, downscale (longest side ≤ max_side) and re-encode as a PNG or JPEG data URL."""
    data = _read_bytes(ref, base_dir)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()  # catches truncated and corrupt files before we decode them
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt or unsupported image {ref[:80]!r}: {exc}") from None
    except Image.DecompressionBombError as exc:  # not an OSError: more pixels than Pillow will decode
        raise ImageError(f"image too large {ref[:80]!r}: {exc}") from None
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side))
    has_alpha = image.mode in ("RGBA", "LA", "P")
    image = image.convert("RGBA" if has_alpha else "RGB")
    buf = io.BytesIO()
    fmt = "PNG" if has_alpha or image.size[0] * image.size[1] <= 256 * 256 else "JPEG"
    image.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode()}"
