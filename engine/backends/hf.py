"""`hf:DIR[?opt=value&...]` — a transformers model in-process, for CPU, tests and architectures vLLM
no longer serves (Mllama).

Why batching: one `generate` per request leaves a CPU (or GPU) mostly idle on tiny matrix-vector
products; graphs keep many requests in flight (N candidates, judges, many items), so concurrent
requests are gathered for a short window (`window_ms`) into one left-padded `generate` of up to
`max_batch` rows. Rows differ in length, sampling, seed, max tokens and stop strings, so those are
per row: a logits processor samples each row with its own seeded generator (generate itself runs
greedy over the sampled one-hot logits) and a stopping criterion ends each row at its own stop string
or budget. A row therefore gives the same tokens alone or in any batch (up to float noise from
padding), and a request with `n` is n rows seeded seed, seed+1, ... — what the engine's fan-out sends.

Images are encoded once per distinct image (an LRU of `image_cache` entries) where the architecture
lets us hand pre-computed states to `generate`: Mllama (cross-attention states) and models that take
`mm_encoder_outputs` with pixel values only (LLaVA). Others (e.g. Qwen2-VL, whose rope needs grid
sizes) go through their processor on each batch: the vision tower runs once per row.

Stop strings follow OpenAI semantics: the text ends before the stop string (the graphs re-add closing
tags); `completion_tokens` counts the tokens generated, including those that spelled the stop string.
Model loading and generate run on one worker thread, never on the event loop.

Options: dtype (auto|float32|bfloat16|float16, default float32 on CPU), device (cpu|cuda|cuda:N|auto),
max_batch (rows, default 32), window_ms (default 5), image_cache (default 64), attn (sdpa|eager),
threads (torch's CPU threads for the process; 1 is steadier when other jobs share the cores).
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import importlib.util
import inspect
import io
import json
import random
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import pricing
from engine.errors import BadRequest, CallError, ServerError, UsageError
from engine.types import Capabilities, Completion, Request

HF_OPTIONS = {"dtype": str, "device": str, "max_batch": int, "window_ms": float, "image_cache": int, "attn": str,
              "threads": int}


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


def _require(scheme: str, *modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        extra = "hf" if scheme == "hf" else "vllm"
        raise UsageError(f"--model {scheme}: needs {', '.join(missing)} (pip install 'stagewise[{extra}]')")


# --- the async side: queue, collection window, one worker thread ------------------------------------


@dataclass(slots=True)
class _Job:
    request: Request
    future: asyncio.Future


class HFBackend:
    """The Backend protocol over one transformers model; `batches` records rows per generate call."""

    def __init__(self, path: str, *, model: str | None = None, dtype: str = "auto", device: str = "cpu",
                 max_batch: int = 32, window_ms: float = 5.0, image_cache: int = 64, attn: str | None = None,
                 threads: int | None = None):
        self.path = path
        self.model = model or f"hf:{path}"
        self.capabilities = Capabilities(n_per_request=True, continue_assistant=True, logprobs=False,
                                         images=has_vision(path))
        self.max_batch = max(1, max_batch)
        self.window_s = max(0.0, window_ms) / 1000
        self._load_args = {"dtype": dtype, "device": device, "image_cache": image_cache, "attn": attn,
                           "threads": threads}
        self._runner: _Runner | None = None
        self._load_error: BaseException | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[_Job] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.batches: list[int] = []  # rows per generate call, for benchmarks and tests

    @classmethod
    def from_spec(cls, rest: str) -> HFBackend:
        _require("hf", "torch", "transformers")
        path, options = split_spec("hf", rest, HF_OPTIONS)
        return cls(check_model_path("hf", path), model=f"hf:{rest}", **options)

    async def complete(self, request: Request) -> list[Completion]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._start(loop)
        job = _Job(request, loop.create_future())
        self._queue.append(job)
        self._wake.set()  # type: ignore[union-attr]
        return await job.future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        """One serving task per event loop; a new loop (another `asyncio.run`) starts afresh."""
        if self._loop is not loop:
            self._loop, self._queue, self._wake = loop, [], asyncio.Event()
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stagewise-hf")
        self._task = loop.create_task(self._serve())

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()  # type: ignore[union-attr]
            self._wake.clear()  # type: ignore[union-attr]
            if self._runner is None and self._load_error is None:
                try:
                    self._runner = await loop.run_in_executor(
                        self._executor, lambda: _Runner(self.path, **self._load_args))
                except Exception as exc:  # noqa: BLE001 — a model that does not load fails every call
                    self._load_error = BadRequest(f"cannot load {self.path}: {type(exc).__name__}: {exc}")
            while self._queue:
                if self._load_error is not None:
                    for job in self._take(len(self._queue) + 1, all_jobs=True):
                        _settle(job.future, self._load_error)
                    break
                if self.window_s and self.max_batch > 1 and _rows(self._queue) < self.max_batch:
                    await asyncio.sleep(self.window_s)  # let the other candidates / items join
                batch = self._take(self.max_batch)
                if not batch:
                    continue
                self.batches.append(_rows(batch))
                try:
                    results = await loop.run_in_executor(self._executor, self._runner.run, [j.request for j in batch])
                except Exception as exc:  # noqa: BLE001 — never leave a caller waiting on a dead batch
                    results = [ServerError(f"batch failed: {type(exc).__name__}: {exc}")] * len(batch)
                for job, result in zip(batch, results):
                    _settle(job.future, result)

    def _take(self, max_rows: int, all_jobs: bool = False) -> list[_Job]:
        """Up to `max_rows` rows, first come first served; a request bigger than that goes alone."""
        batch, rows, rest = [], 0, []
        for job in self._queue:
            if job.future.done():  # cancelled while waiting (timeout): never run it
                continue
            if all_jobs or not batch or rows + job.request.n <= max_rows:
                batch.append(job)
                rows += job.request.n
            else:
                rest.append(job)
        self._queue = rest
        return batch

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for job in self._queue:
            _settle(job.future, ServerError("backend closed"))
        self._queue = []
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._runner = None


def _rows(jobs: list[_Job]) -> int:
    return sum(j.request.n for j in jobs if not j.future.done())


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


# --- the worker side: prepare, encode images once, batch, generate -----------------------------------


@dataclass
class _Prompt:
    """One request, prepared once and shared by its n rows."""

    text: str
    ids: Any                       # 1-D LongTensor, the image placeholders already expanded
    images: list[Any] = field(default_factory=list)       # PIL images, in order
    keys: list[str] = field(default_factory=list)         # their cache keys
    extra: dict[str, Any] = field(default_factory=dict)   # other processor outputs (pixels, masks)


@dataclass
class _Row:
    prompt: _Prompt
    request: Request
    sample: int


class _Runner:
    """Owns the model; called only from the backend's single worker thread."""

    def __init__(self, path: str, *, dtype: str = "auto", device: str = "cpu", image_cache: int = 64,
                 attn: str | None = None, threads: int | None = None):
        import torch
        import transformers as tf

        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        config = tf.AutoConfig.from_pretrained(path)
        self.model_type = config.model_type
        vlm = type(config) in tf.AutoModelForImageTextToText._model_mapping
        torch_dtype = _dtype(torch, dtype, device)
        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        if attn:
            kwargs["attn_implementation"] = attn
        if device == "auto":
            kwargs["device_map"] = "auto"
        cls = tf.AutoModelForImageTextToText if vlm else tf.AutoModelForCausalLM
        self.model = cls.from_pretrained(path, **kwargs).eval()
        if device != "auto":
            self.model.to(device)
        self.device = self.model.device
        try:
            self.processor = tf.AutoProcessor.from_pretrained(path) if vlm else None
        except (OSError, ValueError):
            self.processor = None
        self.tokenizer = getattr(self.processor, "tokenizer", None) or tf.AutoTokenizer.from_pretrained(path)
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen is not None else None
        self.eos = {e for e in ([eos] if isinstance(eos, int) else list(eos or [])) if e is not None}
        if self.tokenizer.eos_token_id is not None:
            self.eos.add(self.tokenizer.eos_token_id)
        pad = self.tokenizer.pad_token_id
        self.pad = pad if pad is not None else (getattr(gen, "pad_token_id", None) or min(self.eos or {0}))
        self.vision = self._vision_path() if vlm and self.processor is not None else "none"
        self.features: OrderedDict[str, Any] = OrderedDict()
        self.image_cache = max(0, image_cache)
        if self.vision == "mllama":
            _drop_after_prefill(self.model, "cross_attention_states")

    def _vision_path(self) -> str:
        """How images reach generate: pre-computed once per image, or the processor's pixels per row."""
        if self.model_type == "mllama":  # the hook needs generate's `is_first_iteration` (transformers 5)
            params = inspect.signature(self.model.prepare_inputs_for_generation).parameters
            return "mllama" if "is_first_iteration" in params else "processor"
        supports = getattr(self.model, "_supports_mm_encoder_outputs", lambda: False)()
        if supports and hasattr(self.model.base_model, "get_image_features"):
            return "features"  # confirmed per request: only when the processor gives pixel_values alone
        return "processor"

    # -- one batch --------------------------------------------------------------------------------

    def run(self, requests: list[Request]) -> list[list[Completion] | BaseException]:
        prompts: list[_Prompt | BaseException] = []
        for r in requests:
            try:
                prompts.append(self.prepare(r))
            except CallError as exc:
                prompts.append(exc)
            except Exception as exc:  # noqa: BLE001 — a request we cannot render fails alone
                prompts.append(BadRequest(f"cannot prepare the request: {type(exc).__name__}: {exc}"))
        rows = [_Row(p, r, s) for p, r in zip(prompts, requests) if isinstance(p, _Prompt) for s in range(r.n)]
        groups = [rows]
        if self.vision in ("mllama", "processor"):  # these cannot mix rows with and without images
            groups = [[r for r in rows if r.prompt.images], [r for r in rows if not r.prompt.images]]
        done: dict[tuple[int, int], Completion] = {}
        failed: dict[int, BaseException] = {}
        for group in groups:
            if not group:
                continue
            try:
                for row, completion in zip(group, self.generate(group)):
                    done[(id(row.request), row.sample)] = completion
            except Exception as exc:  # noqa: BLE001
                err = ServerError(f"generate failed: {type(exc).__name__}: {exc}")
                for row in group:
                    failed[id(row.request)] = err
        out: list[list[Completion] | BaseException] = []
        for p, r in zip(prompts, requests):
            if not isinstance(p, _Prompt):
                out.append(p)
            elif id(r) in failed:
                out.append(failed[id(r)])
            else:
                completions = [done[(id(r), s)] for s in range(r.n)]
                for c in completions[1:]:
                    c.prompt_tokens = 0  # charged once, on the first choice
                for c in completions:
                    c.cost_usd = pricing.cost(f"hf:{self.model_type}", c.prompt_tokens, c.completion_tokens)
                out.append(completions)
        return out

    def prepare(self, request: Request) -> _Prompt:
        if self.vision == "none" and any(isinstance(m.get("content"), list) and any(
                p.get("type") == "image_url" for p in m["content"]) for m in request.messages):
            raise BadRequest("this model takes no images")
        messages, images, keys = _split_images(request.messages)
        if self.vision == "mllama" and len(images) > 1:
            raise BadRequest("hf: Mllama takes one image per request here")
        source = self.processor if getattr(self.processor, "chat_template", None) else self.tokenizer
        cont = request.continue_final and messages and messages[-1].get("role") == "assistant"
        text = source.apply_chat_template(messages, tokenize=False, add_generation_prompt=not cont,
                                          continue_final_message=bool(cont))
        if self.processor is not None:
            enc = self.processor(text=[text], images=[images] if images else None, return_tensors="pt",
                                 add_special_tokens=False)
        else:
            enc = self.tokenizer([text], return_tensors="pt", add_special_tokens=False)
        extra = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        return _Prompt(text, enc["input_ids"][0], images, keys, extra)

    def generate(self, rows: list[_Row]) -> list[Completion]:
        torch = self.torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        kwargs = self._inputs(rows)
        start = kwargs["input_ids"].shape[1]
        stop = _RowStop(rows, start, self.tokenizer, self.eos)
        sampler = _RowSampler(torch, rows)
        config = GenerationConfig(max_new_tokens=max(r.request.max_tokens for r in rows), do_sample=False,
                                  eos_token_id=sorted(self.eos) or None, pad_token_id=self.pad)
        with torch.inference_mode():
            out = self.model.generate(**kwargs, generation_config=config,
                                      logits_processor=LogitsProcessorList([sampler]),
                                      stopping_criteria=StoppingCriteriaList([stop]))
        return [stop.completion(i, out[i, start:].tolist(), len(row.prompt.ids)) for i, row in enumerate(rows)]

    def _inputs(self, rows: list[_Row]) -> dict[str, Any]:
        torch = self.torch
        with_images = [r for r in rows if r.prompt.images]
        if with_images and self.vision == "processor":
            return self._processor_inputs(rows)
        width = max(len(r.prompt.ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding: every row's next token is at the same column
            n = len(r.prompt.ids)
            ids[i, width - n:] = r.prompt.ids
            mask[i, width - n:] = 1
        kwargs: dict[str, Any] = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        if not with_images:
            return kwargs
        if self.vision == "features":
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            feats = [f for r in rows for f in self._image_states(r.prompt)]
            kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=feats)}
        elif self.vision == "mllama":
            kwargs["cross_attention_states"] = torch.cat([s for r in rows for s in self._image_states(r.prompt)])
            masks = [r.prompt.extra["cross_attention_mask"][0] for r in rows]
            tiles = max(m.shape[-1] for m in masks)
            cross = torch.zeros((len(rows), width, 1, tiles), dtype=masks[0].dtype)
            for i, m in enumerate(masks):
                cross[i, width - m.shape[0]:, :, :m.shape[-1]] = m
            kwargs["cross_attention_mask"] = cross.to(self.device)
        return kwargs

    def _processor_inputs(self, rows: list[_Row]) -> dict[str, Any]:
        tok = self.processor.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        try:
            enc = self.processor(text=[r.prompt.text for r in rows], images=[r.prompt.images for r in rows],
                                 return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tok.padding_side = side
        return {k: v.to(self.device) if hasattr(v, "to") else v for k, v in enc.items()}

    def _image_states(self, prompt: _Prompt) -> list[Any]:
        """Per image of this prompt, what the language model consumes; computed once per image
        while it stays among the `image_cache` most recently used."""
        if not all(k in self.features for k in prompt.keys):
            states = self._encode(prompt)
            if self.image_cache == 0:
                return states
            self.features.update(zip(prompt.keys, states))
        out = []
        for key in prompt.keys:
            self.features.move_to_end(key)
            out.append(self.features[key])
        while len(self.features) > max(self.image_cache, len(prompt.keys)):
            self.features.popitem(last=False)
        return out

    def _encode(self, prompt: _Prompt) -> list[Any]:
        torch = self.torch
        pixels = {k: v.to(self.device) for k, v in prompt.extra.items() if k != "cross_attention_mask"}
        with torch.inference_mode():
            if self.vision == "mllama":
                base = self.model.base_model
                hidden = base.vision_model(**pixels).last_hidden_state  # (1, images, tiles, patches, dim)
                states = base.multi_modal_projector(hidden).reshape(
                    -1, hidden.shape[-2], self.model.config.text_config.hidden_size)
                per_image = states.shape[0] // max(1, len(prompt.keys))
                return list(states.split(per_image))
            if set(pixels) != {"pixel_values"}:
                raise BadRequest(f"{self.model_type}: pre-encoding needs pixel values only, got {sorted(pixels)}")
            out = self.model.base_model.get_image_features(**pixels, return_dict=True).pooler_output
            return list(out)


def _dtype(torch, name: str, device: str):
    if name in ("auto", ""):
        return torch.float32 if device == "cpu" else "auto"
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise BadRequest(f"unknown dtype {name!r}")
    return value


def _drop_after_prefill(model, key: str) -> None:
    """Mllama caches the cross-attention keys after prefill; pre-computed states must then stop
    arriving (transformers drops pixel_values itself, but not states we hand it)."""
    original = model.prepare_inputs_for_generation

    def prepare(*args, is_first_iteration=False, **kwargs):
        inputs = original(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            inputs.pop(key, None)
        return inputs

    model.prepare_inputs_for_generation = prepare


def _split_images(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any], list[str]]:
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
                images.append(_decode_image(url))
                keys.append(hashlib.sha1(url.encode()).hexdigest())
                parts.append({"type": "image"})
            else:
                parts.append(part)
        out.append({**m, "content": parts})
    return out, images, keys


def _decode_image(url: str):
    from PIL import Image

    if not url.startswith("data:") or ";base64," not in url:
        raise BadRequest("hf: images must be base64 data URLs (the engine sends them that way)")
    try:
        return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
    except Exception as exc:  # noqa: BLE001
        raise BadRequest(f"cannot decode image: {exc}") from None


class _RowSampler:
    """A logits processor: each sampled row draws its token with its own generator (seeded seed +
    sample index) and hands generate a one-hot row, so greedy search returns it; temperature-0 rows
    pass through (greedy). Rows therefore never share random state, whatever the batch."""

    def __init__(self, torch, rows: list[_Row]):
        self.torch = torch
        self.rows = [(r.request.temperature, r.request.top_p) for r in rows]
        self.gens = []
        for r in rows:
            seed = r.request.seed + r.sample if r.request.seed is not None else random.SystemRandom().getrandbits(63)
            self.gens.append(torch.Generator().manual_seed(seed % (2 ** 63)))

    def __call__(self, input_ids, scores):
        torch = self.torch
        out = scores.clone()
        for i, (temperature, top_p) in enumerate(self.rows):
            if temperature <= 0:
                continue
            probs = torch.softmax(scores[i].float() / temperature, dim=-1)
            if top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                keep = (sorted_p.cumsum(-1) - sorted_p) < top_p  # smallest set reaching top_p
                probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
            token = torch.multinomial(probs.cpu(), 1, generator=self.gens[i]).item()
            out[i] = float("-inf")
            out[i, token] = 0.0
        return out


class _RowStop:
    """A stopping criterion with per-row budgets and stop strings; remembers where each row ended."""

    def __init__(self, rows: list[_Row], start: int, tokenizer, eos: set[int]):
        self.start, self.tokenizer, self.eos = start, tokenizer, eos
        self.max_new = [r.request.max_tokens for r in rows]
        self.stops = [tuple(s for s in r.request.stop if s) for r in rows]
        self.window = [max((len(s) for s in st), default=0) + 4 for st in self.stops]
        self.ended: list[tuple[int, str] | None] = [None] * len(rows)  # (tokens, finish reason)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        made = input_ids.shape[1] - self.start
        for i in range(input_ids.shape[0]):
            if self.ended[i] is not None:
                continue
            last = int(input_ids[i, -1])
            if last in self.eos or (self.stops[i] and any(s in self._tail(input_ids[i], i, made)
                                                          for s in self.stops[i])):
                self.ended[i] = (made, "stop")
            elif made >= self.max_new[i]:
                self.ended[i] = (made, "length")
        return torch.tensor([e is not None for e in self.ended], device=input_ids.device)

    def _tail(self, row, i: int, made: int) -> str:
        """The last few tokens as text: a stop string ends in the newest token, and every token
        spells at least one character, so its length (+ a margin) in tokens is enough."""
        return self.tokenizer.decode(row[-min(made, self.window[i]):], skip_special_tokens=True)

    def completion(self, i: int, tokens: list[int], prompt_tokens: int) -> Completion:
        made, reason = self.ended[i] or (min(len(tokens), self.max_new[i]), "length")
        tokens = tokens[:made]
        text = self.tokenizer.decode([t for t in tokens if t not in self.eos], skip_special_tokens=True)
        cut = [text.find(s) for s in self.stops[i] if s in text]
        if cut:
            text, reason = text[:min(cut)], "stop"
        return Completion(text=text, finish_reason=reason, prompt_tokens=prompt_tokens, completion_tokens=made)
