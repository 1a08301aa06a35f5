"""Keep API keys out of everything we write: errors from providers sometimes echo them back."""
from __future__ import annotations

import os
import re
from functools import lru_cache

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)", re.I)
# Key-shaped text, whatever the environment holds: a bearer token, or an OpenAI/Anthropic-style key (sk-
# and 20+ characters) starting a word, so ids and paths that merely contain "sk-" (task-abcdef12) stay.
_KEY_SHAPED = (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9_\-.]{6,}"),
               re.compile(r"(?i)(?<![A-Za-z0-9_-])(sk-)[A-Za-z0-9_\-.]{20,}"))


@lru_cache(maxsize=1)
def _secret_pattern() -> re.Pattern[str] | None:
    values = sorted({v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6},
                    key=len, reverse=True)
    return re.compile("|".join(map(re.escape, values))) if values else None


def redact(text: str) -> str:
    """Replace the value of every secret-looking environment variable, and key-shaped text, in `text`."""
    pattern = _secret_pattern()
    if pattern is not None:
        text = pattern.sub("[redacted]", text)
    for key_shaped in _KEY_SHAPED:
        text = key_shaped.sub(r"\1[redacted]", text)
    return text
