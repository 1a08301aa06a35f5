"""`--ray`: the same job on a Ray cluster, with the local path's outputs and contract (docs/scale-out.md).

The driver owns the run folder, as the local runner does: it reads ITEMS.jsonl once (the total, the
ids already done, repeats, bad lines, whose rows it writes itself), then streams the rest through
Ray Data — the items still to run, as the driver read them, their images loaded on this node
(prepare.py), and `map_batches` into a pool of async engine actors (actor.py) — and appends each row to
DIR/results.jsonl, flushed, as its batch arrives; actors' trace events go to DIR/traces.jsonl; then
summary.json and the exit status as ever. Ray does the scheduling, retries and restarts: an actor that
dies is restarted and its batch rerun (its finished calls come from the cache); the driver killed,
the same command resumes from results.jsonl.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import orjson

from engine.errors import UsageError
from engine.items import BadLine
from engine.progress import RunProgress
from engine.results import ResultsFile
from engine.runner import count_lines, entries_to_run, solve_entry, write_summary
from engine.trace import Tracer, Usage
from stagewise.jobs import Job

DEFAULT_BATCH = 8


def _pending(items_path: Path, results: ResultsFile, tracer: Tracer
             ) -> tuple[int, dict[str, int], list[str], list[BadLine]]:
    """(lines, ids to run → their attempt, those items as JSON lines, bad lines to write): the entries the
    local runner would run, read by the local runner's reader (so a BOM, a non-UTF-8 line or a repeated id
    is what it is locally), each item once."""
    todo, lines, bad = {}, [], []
    for entry in entries_to_run(items_path, results.done, tracer):
        if isinstance(entry, BadLine):
            bad.append(entry)
        else:
            todo[entry.id] = results.attempt(entry.id)
            lines.append(orjson.dumps(entry.model_dump(mode="json")).decode())
    return count_lines(items_path), todo, lines, bad


def _dataset(job: Job, todo: dict[str, int], lines: list[str], base_dir: Path, cache_path: str | None,
             limiter: Any):
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy

    from stagewise.cluster.actor import EngineActor
    from stagewise.cluster.prepare import prepare_batch

    a = job.args
    here = {"ray.io/node-id": ray.get_runtime_context().get_node_id()}  # the driver's node: its files
    batch = a.ray_batch_size
    per_actor = a.items_in_flight or a.concurrency
    in_flight = max(2, -(-per_actor // batch) + 1)  # enough batches to keep per_actor items busy
    in_process = job.model.startswith(("hf:", "vllm:"))
    ds = ray.data.from_items([{"text": line} for line in lines])
    ds = ds.map_batches(prepare_batch, batch_format="numpy", batch_size=256, label_selector=here,
                        fn_kwargs={"todo": todo, "base_dir": str(base_dir),
                                   "max_image_side": a.max_image_side})
    ds = ds.repartition(target_num_rows_per_block=batch)  # streaming: one block per actor call
    return ds.map_batches(
        EngineActor, batch_format="numpy", batch_size=batch,
        fn_constructor_kwargs={"args": a, "spec": job.spec, "limiter": limiter, "base_dir": str(base_dir),
                               "cache_path": cache_path},
        compute=ActorPoolStrategy(size=a.ray_actors, max_tasks_in_flight_per_actor=in_flight,
                                  max_concurrent_calls_per_actor=in_flight),
        num_cpus=1 if in_process else 0.25, num_gpus=a.ray_gpus_per_actor or None)


def stagewise_env() -> dict[str, str]:
    """The STAGEWISE_* settings of this command (a price, a prompts folder) for a cluster's actors.
    Provider API keys are not among them: Ray shows a job's runtime_env to anyone who can see the
    cluster, so keys stay in each node's own environment (docs/scale-out.md)."""
    return {k: v for k, v in os.environ.items() if k.startswith("STAGEWISE_")}


def _batches(ds) -> Iterator[dict[str, Any]]:
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


async def run_on_ray(job: Job, out: Path, cache_path: Path | None) -> dict[str, Any]:
    """Run `job` over its items on the connected cluster; returns (and writes) DIR/summary.json."""
    import ray
    import ray.data

    from stagewise.cluster.limiter import AccountLimiter

    a = job.args
    out.mkdir(parents=True, exist_ok=True)
    results = await asyncio.to_thread(ResultsFile, out / "results.jsonl", a.retry_errors)
    tracer = Tracer(out / "traces.jsonl")
    base_dir = a.items.resolve().parent
    started, run_usage = time.perf_counter(), Usage()
    total, todo, lines, bad = await asyncio.to_thread(_pending, a.items, results, tracer)
    progress = RunProgress(total=total, done=len(results.done), enabled=not a.no_progress)

    def add(row: dict[str, Any], usage: Usage) -> None:
        results.append(row)
        run_usage.add(usage)
        progress.advance(ok=row["status"] == "ok", usage=usage)

    limiter = None
    try:
        with progress:
            for entry in bad:
                add(*await solve_entry(entry, _never, meta=job.meta, tracer=tracer, base_dir=base_dir,
                                       load_image=_never, attempt=results.attempt(entry.id)))
            if todo:
                limiter = ray.remote(num_cpus=0)(AccountLimiter).remote(a.rpm, a.tpm)
                batches = _batches(_dataset(job, todo, lines, base_dir,
                                            str(cache_path.resolve()) if cache_path else None, limiter))
                while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                    for row_id, text, traces in zip(batch["id"], batch["row"], batch["traces"]):
                        tracer.write_lines(traces)
                        if row_id in results.done:  # a repeated id in ITEMS.jsonl: its first row counts
                            continue
                        row = orjson.loads(text)
                        add(row, Usage.of(row["usage"]))
                    tracer.flush(every_s=0.5)
    finally:
        summary = write_summary(out, job.meta, results, run_usage, progress.finished, started)
        results.close()
        tracer.close()
        if limiter is not None:
            ray.kill(limiter)
    return summary


async def _never(*_: Any) -> Any:
    raise AssertionError("a bad line is never solved")


def _check_reachable(address: str) -> None:
    """A HOST:PORT that answers nothing is a clear error now, not minutes of Ray reconnecting."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # `auto`, or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UsageError(f"--ray {address}: nothing answers there ({exc.strerror or exc}); start the head "
                         "with `ray start --head` or pass its address") from None


@contextlib.contextmanager
def on_cluster(address: str, actors: int) -> Iterator[None]:
    """Join the cluster at `address` (`auto`: the one `ray start` runs on this machine, or ray://...)
    or, for "", start a local one for this command and stop it at the end."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'stagewise[ray]' (ray[data])") from None
    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
        _check_reachable(address)
        try:
            if address:  # the actors run in the nodes' environment: ours gives them STAGEWISE_* settings
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING,
                         runtime_env={"env_vars": stagewise_env()})
            else:  # logical CPUs, not cores: the actors mostly wait on the network
                ray.init(address="local",  # a new one, even where `ray start` runs one
                         num_cpus=max(4, os.cpu_count() or 1, actors + 2), include_dashboard=False,
                         log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsageError(f"--ray {address or '(local)'}: cannot start or join the Ray cluster: {exc}") from None
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # our progress line is the run's progress
    # a job smaller than one batch per actor is fine: Ray Data's advice about it is noise on stderr
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", module="ray.data")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    try:
        yield
    finally:
        if started:
            ray.shutdown()
