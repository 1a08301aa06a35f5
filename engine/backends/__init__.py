"""Pick a backend from a model string: `vllm:`, `hf:`, or anything LiteLLM routes."""
from __future__ import annotations

import os

from engine.errors import UsageError
from engine.types import Backend

DIRECT_PREFIXES = ("openai/", "hosted_vllm/")


def make_backend(model: str, api_base: str | None = None, client: str = "auto") -> Backend:
    """`client` is "auto" (direct HTTP for OpenAI-compatible endpoints, LiteLLM otherwise), "direct"
    or "litellm"."""
    model = (model or "").strip()
    if not model or any(ch.isspace() for ch in model):
        raise UsageError(f"bad model string {model!r}: expected e.g. openai/gpt-4o, hosted_vllm/NAME")
    scheme, sep, rest = model.partition(":")
    if sep and "/" not in scheme:
        if scheme == "hf":
            from engine.backends.hf import HFBackend

            return HFBackend.from_spec(rest)
        if scheme == "vllm":
            from engine.backends.vllm_inprocess import VLLMBackend

            return VLLMBackend.from_spec(rest)
        raise UsageError(f"bad model string {model!r}: unknown scheme {scheme!r} (use vllm:, hf: or a "
                         f"LiteLLM provider/model)")
    if model.startswith(DIRECT_PREFIXES) and client != "litellm":
        from engine.backends.openai_compat import OpenAICompatBackend

        if model.startswith("hosted_vllm/"):
            if not api_base:
                raise UsageError(f"--model {model} needs --api-base (or STAGEWISE_API_BASE)")
            return OpenAICompatBackend(model, api_base, os.environ.get("HOSTED_VLLM_API_KEY"),
                                       continue_assistant=True)
        return OpenAICompatBackend(model, api_base or "https://api.openai.com/v1",
                                   os.environ.get("OPENAI_API_KEY"))
    if client == "direct":
        raise UsageError(f"--client direct needs an OpenAI-compatible model string ({', '.join(DIRECT_PREFIXES)}...)")
    from engine.backends.litellm_backend import LiteLLMBackend, import_litellm

    litellm = import_litellm()
    try:
        litellm.get_llm_provider(model, api_base=api_base)
    except Exception:
        raise UsageError(f"bad model string {model!r}: LiteLLM knows no provider for it "
                         f"(write provider/model, e.g. openai/gpt-4o)") from None
    return LiteLLMBackend(model, api_base)
