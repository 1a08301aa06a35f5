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
Model loading, image decoding and generate run on one worker thread, never on the event loop.
This module is the batcher (queue, collection window, worker thread); hf_runner.py owns the model,
hf_rows.py each row's sampling and stopping, model_spec.py the model string.

Options: dtype (auto|float32|bfloat16|float16, default float32 on CPU), device (cpu|cuda|cuda:N|auto;
default cuda where torch sees a GPU, else cpu),
max_batch (rows, default 32), window_ms (default 5), image_cache (default 64), attn (sdpa|eager),
threads (torch's CPU threads for the process; 1 is steadier when other jobs share the cores).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass
from typing import Any

from engine.backends.hf_runner import Runner
from engine.backends.model_spec import check_model_path, has_vision, require_modules, split_spec
from engine.errors import BadRequest, ServerError
from engine.types import Capabilities, Completion, Request

HF_OPTIONS = {"dtype": str, "device": str, "max_batch": int, "window_ms": float, "image_cache": int, "attn": str,
              "threads": int}


@dataclass(slots=True)
class _Job:
    request: Request
    future: asyncio.Future


class HFBackend:
    """The Backend protocol over one transformers model; `batches` records rows per generate call."""

    def __init__(self, path: str, *, model: str | None = None, dtype: str = "auto", device: str = "",
                 max_batch: int = 32, window_ms: float = 5.0, image_cache: int = 64, attn: str | None = None,
                 threads: int | None = None):
        self.path = path
        self.model = model or f"hf:{path}"
        self.capabilities = Capabilities(n_per_request=True, continue_assistant=True, logprobs=True,
                                         images=has_vision(path))
        self.max_batch = max(1, max_batch)
        self.window_s = max(0.0, window_ms) / 1000
        self._load_args = {"dtype": dtype, "device": device, "image_cache": image_cache, "attn": attn,
                           "threads": threads}
        self._runner: Runner | None = None
        self._load_error: BaseException | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[_Job] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.batches: list[int] = []  # rows per generate call, for benchmarks and tests

    @classmethod
    def from_spec(cls, rest: str) -> HFBackend:
        require_modules("hf", "torch", "transformers")
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
                        self._executor, lambda: Runner(self.path, **self._load_args))
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
