"""Wire a command's options into clients, a graph and the batch runner."""
from __future__ import annotations

import argparse
from typing import Any

from engine.backends import make_backend
from engine.cache import Cache
from engine.client import Client
from engine.limits import Limits
from engine.retry import RetryPolicy
from engine.runner import run_items
from engine.trace import Tracer
from search import build_graph
from search.base import Roles, Settings
from stages.agent import Sampling


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(mode=args.mode, n=args.n, selection=getattr(args, "selection", "bracket"),
                    faithful=getattr(args, "faithful", False),
                    sampling=Sampling(args.temperature, args.top_p, args.max_tokens, args.seed))


async def run_generate(args: argparse.Namespace) -> dict[str, Any]:
    generator_backend = make_backend(args.model, args.api_base, args.client)
    judge_backend = (make_backend(args.judge_model, args.judge_api_base or args.api_base, args.client)
                     if args.judge_model else None)
    args.out.mkdir(parents=True, exist_ok=True)
    tracer = Tracer(args.out / "traces.jsonl")
    cache = None if args.no_cache else Cache(args.cache or args.out / "cache.sqlite")
    retry = RetryPolicy(max_attempts=args.max_retries + 1, timeout_s=args.timeout,
                        base_delay_s=args.backoff)
    generator = Client(generator_backend, tracer=tracer, cache=cache,
                       limits=Limits(args.concurrency, args.rpm, args.tpm), retry=retry)
    judge = generator if judge_backend is None else Client(
        judge_backend, tracer=tracer, cache=cache, limits=Limits(args.concurrency), retry=retry)
    try:
        graph = build_graph(args.graph, _settings(args), Roles(generator, judge))
        return await run_items(
            args.items, args.out, graph, tracer=tracer,
            meta={"graph": args.graph, "model": args.model},
            concurrency=args.items_in_flight or args.concurrency, max_image_side=args.max_image_side,
            show_progress=not args.no_progress)
    finally:
        await generator.aclose()
        if judge is not generator:
            await judge.aclose()
        if cache:
            cache.close()
        tracer.close()
