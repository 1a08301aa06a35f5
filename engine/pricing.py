"""Token prices from LiteLLM's own price map, read as data so the direct path never imports LiteLLM."""
from __future__ import annotations

import importlib.util
import json
import math
import os
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def _price_map() -> dict:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / "model_prices_and_context_window_backup.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@lru_cache(maxsize=256)
def prices(model: str) -> tuple[float, float]:
    """(USD per prompt token, USD per completion token) for a LiteLLM model string; for a model the price
    map does not know (local servers, self-hosted models), STAGEWISE_PRICE_PER_MTOK's, else (0, 0)."""
    table = _price_map()
    name = model.split("/", 1)[1] if model.startswith(("openai/", "hosted_vllm/")) else model
    entry = table.get(model) or table.get(name)
    if entry:
        return float(entry.get("input_cost_per_token") or 0.0), float(entry.get("output_cost_per_token") or 0.0)
    return env_price() or (0.0, 0.0)


def env_price() -> tuple[float, float] | None:
    """STAGEWISE_PRICE_PER_MTOK ("in,out" USD per million tokens, for self-hosted models) per token, or
    None when unset; ValueError when it is not two numbers (the CLI checks it before any call)."""
    value = os.environ.get("STAGEWISE_PRICE_PER_MTOK")
    if not value:
        return None
    try:
        inp, out = (float(x) / 1e6 for x in value.split(","))
        if not (math.isfinite(inp) and math.isfinite(out) and inp >= 0 and out >= 0):
            raise ValueError
    except ValueError:
        raise ValueError(f"STAGEWISE_PRICE_PER_MTOK={value!r}: expected IN,OUT (USD per million prompt and "
                         "completion tokens, 0 or more), e.g. 0.15,0.6") from None
    return inp, out


def cost(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    inp, out = prices(model)
    return prompt_tokens * inp + completion_tokens * out
