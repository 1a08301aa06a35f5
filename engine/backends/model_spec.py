"""Model strings of the in-process backends, `SCHEME:DIR_OR_ID[?key=value&...]`: split into the model
and typed options, with a usage error (exit 2) before any item runs when the string cannot work."""
from __future__ import annotations

import importlib.util
import json
import urllib.parse
from pathlib import Path
from typing import Any

from engine.errors import UsageError


def split_spec(scheme: str, rest: str, allowed: dict[str, type]) -> tuple[str, dict[str, Any]]:
    """`DIR?key=value&...` → (DIR, typed options); unknown keys and bad values are usage errors."""
    path, _, query = rest.partition("?")
    if not path:
        raise UsageError(f"--model {scheme}: needs a model folder or name, e.g. {scheme}:/path/to/model")
    options: dict[str, Any] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise UsageError(f"--model {scheme}:...?{key}=: unknown option (known: {', '.join(allowed)})")
        try:
            options[key] = allowed[key](value)
        except ValueError:
            raise UsageError(f"--model {scheme}:...?{key}={value}: not a valid {allowed[key].__name__}") from None
    return path, options


def check_model_path(scheme: str, path: str) -> str:
    """A local folder must hold config.json; a hub id (org/name) is left to the library to resolve."""
    p = Path(path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise UsageError(f"--model {scheme}:{path}: no config.json in that folder")
        return str(p.resolve())
    if path.startswith(("/", ".", "~")) or path.count("/") != 1:
        raise UsageError(f"--model {scheme}:{path}: no such model folder")
    return path


def has_vision(path: str) -> bool:
    """Whether a model folder's config names a vision tower (hub ids: assume it does)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return True
    return "vision_config" in config


def require_modules(scheme: str, *modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        extra = "hf" if scheme == "hf" else "vllm"
        raise UsageError(f"--model {scheme}: needs {', '.join(missing)} (pip install 'stagewise[{extra}]')")
