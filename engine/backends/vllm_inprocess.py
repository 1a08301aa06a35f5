"""`vllm:NAME_OR_DIR[?option=value&...]` — vLLM's async engine in-process, no HTTP in between.

Engine options ride in the model string as a query; each key is an `AsyncEngineArgs` field and each
value is read as JSON when it parses (numbers, true/false, objects) and as a string otherwise:

    --model 'vllm:/models/llava-cot?max_model_len=4096&gpu_memory_utilization=0.6&tensor_parallel_size=2'
    --model 'vllm:/tmp/tiny?dtype=float32&enforce_eager=true&limit_mm_per_prompt={"image":1}'

Why a query rather than an env var: the options belong to the model (the generator and a judge model
can differ), and the whole string is the cache key's model name, so outputs of differently
configured engines never mix. Defaults we set (each overridable): prefix caching on (every stage
beam candidate and judge call repeats the item's prompt and image), and on CPU builds
enforce_eager and a 1 GiB KV cache (VLLM_CPU_KVCACHE_SPACE).

One engine per model string and event loop in a process, shared by every backend made from it
(compare's graphs, a judge on the same model) and shut down at exit. The prompt is rendered with the
model's own chat template (transformers' `continue_final_message` for assistant prefixes) and images
go in as `multi_modal_data`, the way `LLM.generate` takes them in every vLLM since 0.4; they are decoded,
and the prompt rendered, on a worker thread so a large image never stalls the event loop. Stop strings
follow OpenAI semantics (excluded from the text; the graphs re-add closing tags). With `n` and a seed,
vLLM draws all n samples from one seeded generator.
"""
from __future__ import annotations

import asyncio
import atexit
import itertools
import json
import os
from typing import Any

from engine import pricing
from engine.backends.chat_images import split_images
from engine.backends.model_spec import check_model_path, has_vision, split_spec
from engine.errors import BadRequest, CallError, ServerError, UsageError
from engine.types import Capabilities, Completion, Request

_ENGINES: dict[tuple[str, int], _Engine] = {}
_ids = itertools.count()


class _AnyKey(dict):
    """split_spec's table of allowed keys: any key, values as JSON when they parse."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str):
        return _json_or_str


def _json_or_str(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _token_logprobs(output: Any) -> list[tuple[str, dict[str, float]]] | None:
    """vLLM's per-token {token id: Logprob(logprob, rank, decoded_token)} as (token, {alternative:
    logprob}); the sampled token is among them even when outside the top k."""
    if not output.logprobs:
        return None
    out = []
    for token_id, step in zip(output.token_ids, output.logprobs):
        top: dict[str, float] = {}
        for alt in step.values():
            text = alt.decoded_token or ""
            top[text] = max(top.get(text, float("-inf")), float(alt.logprob))
        chosen = step.get(token_id)
        out.append(((chosen.decoded_token or "") if chosen is not None else "", top))
    return out


class _Engine:
    """An AsyncLLM and the chat template of its model."""

    def __init__(self, llm, template):
        self.llm, self.template = llm, template


class VLLMBackend:
    def __init__(self, path: str, *, model: str | None = None, options: dict[str, Any] | None = None):
        self.path = path
        self.model = model or f"vllm:{path}"
        self.capabilities = Capabilities(n_per_request=True, continue_assistant=True, logprobs=True,
                                         images=has_vision(path))
        self.options = dict(options or {})
        self._engine: _Engine | None = None
        self._starting: asyncio.Future | None = None

    @classmethod
    def from_spec(cls, rest: str) -> VLLMBackend:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise UsageError("--model vllm: needs vLLM installed in this Python (pip install 'stagewise[vllm]'); "
                             "or serve the model (stagewise serve DIR) and use hosted_vllm/NAME --api-base URL")
        path, options = split_spec("vllm", rest, _AnyKey())
        path = check_model_path("vllm", path)
        engine_args(path, options)  # an unknown option is bad usage (exit 2), found before any item runs
        return cls(path, model=f"vllm:{rest}", options=options)

    async def _get(self) -> _Engine:
        if self._engine is not None:
            return self._engine
        loop = asyncio.get_running_loop()
        key = (self.model, id(loop))
        if key not in _ENGINES:
            if self._starting is None or self._starting.get_loop() is not loop:
                self._starting = loop.create_task(self._start())
            engine = await asyncio.shield(self._starting)
            _ENGINES.setdefault(key, engine)
        self._engine = _ENGINES[key]
        return self._engine

    async def _start(self) -> _Engine:
        try:
            # vLLM builds its engine (and imports torch) synchronously: keep that off the event loop
            return await asyncio.to_thread(_build, self.path, self.options)
        except Exception as exc:  # noqa: BLE001 — a model that does not load fails every call
            raise BadRequest(f"vLLM cannot start {self.path}: {type(exc).__name__}: {exc}") from None

    async def complete(self, request: Request) -> list[Completion]:
        engine = await self._get()
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        try:  # decoding images and rendering the template are CPU work: off the event loop
            prompt = await asyncio.to_thread(_prompt, engine.template, request)
        except CallError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise BadRequest(f"cannot render the request: {type(exc).__name__}: {exc}") from None
        params = SamplingParams(n=request.n, temperature=request.temperature, top_p=request.top_p,
                                max_tokens=request.max_tokens, stop=list(request.stop) or None,
                                seed=request.seed, output_kind=RequestOutputKind.FINAL_ONLY,
                                logprobs=request.logprobs or None)
        final = None
        try:
            async for out in engine.llm.generate(prompt, params, f"stagewise-{next(_ids)}",
                                                 tokenization_kwargs={"add_special_tokens": False}):
                final = out
        except (ValueError, TypeError) as exc:  # vLLM rejects the input itself (too long, bad image)
            raise BadRequest(f"vLLM rejected the request: {exc}") from None
        except Exception as exc:  # noqa: BLE001 — engine errors: a retry may succeed
            raise ServerError(f"vLLM failed: {type(exc).__name__}: {exc}") from None
        if final is None or len(final.outputs) != request.n:
            raise ServerError("vLLM returned no (or too few) outputs")
        prompt_tokens = len(final.prompt_token_ids or [])
        out = []
        for i, o in enumerate(sorted(final.outputs, key=lambda o: o.index)):
            p = prompt_tokens if i == 0 else 0
            c = len(o.token_ids)
            out.append(Completion(text=o.text, finish_reason=o.finish_reason, prompt_tokens=p,
                                  completion_tokens=c, cost_usd=pricing.cost(self.model, p, c),
                                  logprobs=_token_logprobs(o) if request.logprobs else None))
        return out

    async def aclose(self) -> None:
        """The engine outlives the backend (others may share it); it is shut down at exit."""
        self._engine = None


def _prompt(template, request: Request) -> dict[str, Any]:
    messages, images, _ = split_images(request.messages)
    cont = bool(request.continue_final and messages and messages[-1].get("role") == "assistant")
    text = template.apply_chat_template(messages, tokenize=False, add_generation_prompt=not cont,
                                        continue_final_message=cont)
    prompt: dict[str, Any] = {"prompt": text}
    if images:
        prompt["multi_modal_data"] = {"image": images if len(images) > 1 else images[0]}
    return prompt


def engine_args(path: str, options: dict[str, Any]):
    """AsyncEngineArgs with our defaults under the user's options; an unknown option is a usage error."""
    import dataclasses

    from vllm.engine.arg_utils import AsyncEngineArgs

    fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise UsageError(f"--model vllm:...?{unknown[0]}=: not a vLLM engine option (see AsyncEngineArgs)")
    defaults: dict[str, Any] = {"enable_prefix_caching": True}
    if _cpu_build():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        defaults.update(enforce_eager=True)
    return AsyncEngineArgs(model=path, **{**defaults, **options})


def _cpu_build() -> bool:
    try:
        from vllm.platforms import current_platform

        return current_platform.is_cpu()
    except Exception:  # noqa: BLE001
        return False


def _build(path: str, options: dict[str, Any]) -> _Engine:
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    from vllm.v1.engine.async_llm import AsyncLLM

    template = _template(path)  # first: a frame kept alive by a library must not hold the engine
    return _Engine(AsyncLLM.from_engine_args(engine_args(path, options)), template)


def _template(path: str):
    """Whatever carries the chat template: the processor for most VLMs, else the tokenizer."""
    from transformers import AutoProcessor, AutoTokenizer

    try:
        proc = AutoProcessor.from_pretrained(path)
        if getattr(proc, "chat_template", None):
            return proc
    except Exception:  # noqa: BLE001 — text models have no processor; some processors need extras
        pass
    return AutoTokenizer.from_pretrained(path)


@atexit.register
def shutdown_all() -> None:
    """Stop every engine this process started (its EngineCore is a child process), and let go of
    them while the interpreter is whole (AsyncLLM.__del__ fails once modules are torn down)."""
    import gc

    engines = list(_ENGINES.values())
    _ENGINES.clear()
    for engine in engines:
        try:
            engine.llm.shutdown()
        except Exception:  # noqa: BLE001
            pass
        engine.llm = None
    del engines
    gc.collect()
