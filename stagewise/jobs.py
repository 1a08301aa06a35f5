"""Wire a command's options into clients, graphs and the batch runner."""
from __future__ import annotations

import argparse
import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from engine.backends import make_backend
from engine.cache import Cache
from engine.client import Client
from engine.errors import UsageError
from engine.fallback import FallbackClient, recording_answers
from engine.folder_lock import locked_folder
from engine.limits import Limits, account_key
from engine.retry import RetryPolicy
from engine.runner import Solve, run_items
from engine.trace import Tracer
from search import GraphSpec, Roles, Settings, build_graph, resolve
from search.judge_quality import add_to_summary
from stages.agent import Sampling
from stagewise import run_options


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(mode=args.mode, n=args.n, selection=args.selection, faithful=args.faithful,
                    max_sentences=args.max_sentences, judge_order=args.judge_order,
                    judge_logprobs=args.judge_logprobs == "on", judge_temperature=args.judge_temperature,
                    sampling=Sampling(args.temperature, args.top_p, args.max_tokens, args.seed))


class Job:
    """One graph's run: its backends are made (and checked) before anything is written."""

    def __init__(self, args: argparse.Namespace, spec: GraphSpec):
        self.args, self.spec = args, spec
        if args.faithful and spec.selection == "bracket":
            raise UsageError(f"graph {spec.name}: selection = \"bracket\" cannot run with --faithful, which "
                             "runs the reference's sequential knockout")
        self.model = spec.models.get("generator") or args.model
        judge_model = spec.models.get("judge") or args.judge_model
        self.generator_backend = make_backend(self.model, args.api_base, args.client)
        self.judge_model = judge_model or self.model
        # --api-base serves the judge too only on the generator's provider: an openai/ judge beside a
        # hosted_vllm/ generator goes to OpenAI, not to the vLLM server
        same_provider = account_key(self.judge_model, None)[0] == account_key(self.model, None)[0]
        judge_api_base = args.judge_api_base or (args.api_base if same_provider else None)
        # the judge has its own backend when it is another model or the same model on another server
        self.judge_backend = (make_backend(self.judge_model, judge_api_base, args.client)
                              if (self.judge_model, judge_api_base) != (self.model, args.api_base) else None)
        # one Limits per provider account: a judge on the generator's account shares its caps
        self.accounts = (account_key(self.model, args.api_base), account_key(self.judge_model, judge_api_base))
        fallbacks = fallback_models(args)
        self.fallback_backends = [make_backend(m, base, args.client) for m, base in fallbacks]
        self.fallback_accounts = [account_key(m, base) for m, base in fallbacks]

    @property
    def options(self) -> dict[str, Any]:
        """The options that shape this graph's rows (stagewise/run_options.py)."""
        return run_options.options_of(self.args, self.spec.name, self.model, self.judge_model, self.spec.selection)

    @property
    def meta(self) -> dict[str, Any]:
        return {"graph": self.spec.name, "model": self.model, "judge_model": self.judge_model}

    def build(self, tracer: Tracer, cache: Cache | None,
              limits_for: Callable[[tuple[str, str]], Limits] | None = None) -> tuple[Solve, list[Client]]:
        """The graph's `solve` and the clients it calls (to close). `limits_for(account)` makes each
        account's Limits (default: this process's own; stagewise/cluster shares them across a cluster)."""
        a = self.args
        retry = RetryPolicy(max_attempts=a.max_retries + 1, timeout_s=a.timeout, base_delay_s=a.backoff,
                            max_retry_after_s=a.max_retry_after)
        make_limits = limits_for or (lambda _: Limits(a.concurrency, a.rpm, a.tpm))
        limits = {key: make_limits(key) for key in dict.fromkeys((*self.accounts, *self.fallback_accounts))}
        generator = Client(self.generator_backend, tracer=tracer, cache=cache,
                           limits=limits[self.accounts[0]], retry=retry)
        judge = None if self.judge_backend is None else Client(
            self.judge_backend, tracer=tracer, cache=cache, limits=limits[self.accounts[1]], retry=retry)
        closing = [c for c in (generator, judge) if c is not None]
        if self.fallback_backends:
            fallbacks = [Client(b, tracer=tracer, cache=cache, limits=limits[k], retry=retry)
                         for b, k in zip(self.fallback_backends, self.fallback_accounts)]
            closing += fallbacks
            generator = FallbackClient([generator, *fallbacks])
            if judge is not None and self.judge_model == self.model:  # the same model on its own server
                judge = FallbackClient([judge, *fallbacks])
        if judge is None:  # the generator's model on its server: the judge is the generator's client
            judge = generator
        settings = settings_from(a)
        if self.spec.selection:
            settings = replace(settings, selection=self.spec.selection)
        solve = build_graph(self.spec, settings, Roles(generator, judge))
        return (recording_answers(solve) if self.fallback_backends else solve), closing

    async def run(self, out: Path, cache: Cache | None) -> dict[str, Any]:
        a = self.args
        out.mkdir(parents=True, exist_ok=True)
        tracer = Tracer(out / "traces.jsonl", prompts=getattr(a, "trace_prompts", False))
        solve, clients = self.build(tracer, cache)
        try:
            return await run_items(
                a.items, out, solve, tracer=tracer, meta=self.meta,
                concurrency=a.items_in_flight or a.concurrency, max_image_side=a.max_image_side,
                show_progress=not a.no_progress, retry_errors=getattr(a, "retry_errors", "retryable"))
        finally:
            for client in clients:
                await client.aclose()
            tracer.close()


def fallback_models(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(model, api base) per --fallback-model, in order; bases: none, one for all, or one per model."""
    models = [m.strip() for value in args.fallback_model or () for m in value.split(",") if m.strip()]
    bases = [b.strip() for value in args.fallback_api_base or () for b in value.split(",") if b.strip()]
    if bases and not models:
        raise UsageError("--fallback-api-base needs a --fallback-model")
    if len(bases) > 1 and len(bases) != len(models):
        raise UsageError(f"{len(bases)} --fallback-api-base values for {len(models)} fallback models: "
                         "give one for all of them, or one per model")
    return [(m, bases[i] if len(bases) > 1 else (bases or [None])[0]) for i, m in enumerate(models)]


def _cache(args: argparse.Namespace, default: Path) -> Cache | None:
    if args.no_cache:
        return None
    default.parent.mkdir(parents=True, exist_ok=True)
    path = args.cache or default
    try:
        return Cache(path)
    except sqlite3.Error as exc:  # a folder, an unwritable place, a file that is not SQLite
        raise UsageError(f"--cache {path}: cannot use it as a cache ({exc})") from None


def _local_cache(args: argparse.Namespace, default: Path) -> Cache | None:
    """This process's cache; on Ray none (each actor opens the file), but the file is checked here."""
    cache = _cache(args, default)
    if cache is not None and _on_ray(args):
        cache.close()
        return None
    return cache


def _on_ray(args: argparse.Namespace) -> bool:
    return getattr(args, "ray", None) is not None


async def _run_job(job: Job, out: Path, cache: Cache | None, default_cache: Path) -> dict[str, Any]:
    """In this process, or with --ray on a Ray cluster (stagewise/cluster), whose actors open the cache
    file themselves. summary.json then gets the judge's quality per stage (search/judge_quality.py)."""
    if _on_ray(job.args):
        from stagewise.cluster.driver import run_on_ray

        summary = await run_on_ray(job, out, None if job.args.no_cache else (job.args.cache or default_cache))
    else:
        summary = await job.run(out, cache)
    return await asyncio.to_thread(add_to_summary, out, summary, job.args.items)


async def run_generate(args: argparse.Namespace) -> dict[str, Any]:
    job = Job(args, resolve(args.graph))
    with locked_folder(args.out):
        run_options.check(args.out, job.options)
        cache = _local_cache(args, args.out / "cache.sqlite")
        run_options.record(args.out, job.options)
        try:
            return await _run_job(job, args.out, cache, args.out / "cache.sqlite")
        finally:
            if cache:
                cache.close()


def resolve_graphs(graphs: str) -> list[GraphSpec]:
    """--graphs's graphs, each once: UsageError for an unknown one or a name given twice (each graph
    writes DIR/<name>/)."""
    specs = [resolve(g.strip()) for g in graphs.split(",") if g.strip()]
    if not specs:
        raise UsageError(f"--graphs {graphs!r} names no graph: give one or more, comma-separated")
    names = [spec.name for spec in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"--graphs: graph name {', '.join(repeated)} appears more than once (a .toml graph's "
                         "`name` counts); each graph writes DIR/<name>/, so give each its own name")
    return specs


async def run_compare(args: argparse.Namespace) -> dict[str, Any]:
    """Each graph in turn on the same items, one shared cache: identical requests are paid once."""
    from search.report import write_report

    jobs = [Job(args, spec) for spec in resolve_graphs(args.graphs)]
    names = [j.spec.name for j in jobs]
    with locked_folder(args.out):  # DIR, and so every DIR/<graph>/ in it
        for job in jobs:  # every graph's folder checked before any is written
            run_options.check(args.out / job.spec.name, job.options)
        cache = _local_cache(args, args.out / "cache.sqlite")
        for job in jobs:
            run_options.record(args.out / job.spec.name, job.options)
        summaries = {}
        try:
            for job in jobs:
                summaries[job.spec.name] = await _run_job(job, args.out / job.spec.name, cache,
                                                          args.out / "cache.sqlite")
        finally:
            if cache:
                cache.close()
        return {**write_report(args.out, names, model=args.model, n=args.n, items_path=args.items),
                "summaries": summaries}
