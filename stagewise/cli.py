"""`stagewise` command line: the composition root. It may import every package; nothing imports it.

Heavy parts load lazily: `generate` never imports torch, and LiteLLM only when a model needs it.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.errors import UsageError
from engine.loop import run

GRAPH_NAMES = ("chain", "best_of_n", "sentence_beam", "stage_beam")


class _Parser(argparse.ArgumentParser):
    """Bad usage is one clear line and exit 2, not a screen of usage text."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"stagewise: error: {message} (see stagewise {self.prog.split()[-1]} --help)", file=sys.stderr)
        raise SystemExit(2)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("items", type=Path, help="ITEMS.jsonl: {id, question, image?, answer?, choices?} per line")
    p.add_argument("--out", type=Path, required=True, help="output folder (results, traces, summary)")
    p.add_argument("--model", default=os.environ.get("STAGEWISE_MODEL"),
                   help="LiteLLM model string (openai/gpt-4o, hosted_vllm/NAME, ...); env STAGEWISE_MODEL")
    p.add_argument("--judge-model", default=None, help="model for judge calls (default: --model)")
    p.add_argument("--api-base", default=os.environ.get("STAGEWISE_API_BASE"),
                   help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1; env STAGEWISE_API_BASE")
    p.add_argument("--judge-api-base", default=None, help="base URL for the judge model (default: --api-base)")
    p.add_argument("--mode", choices=("full", "staged"), default="staged",
                   help="full: the 4-tag prompt in one call; staged: one call per stage")
    p.add_argument("--n", type=int, default=4, help="candidates per step for search graphs")
    p.add_argument("--selection", choices=("bracket", "knockout"), default=None,
                   help="how a judge picks 1 of N: bracket = N-1 verdicts in log2 N concurrent rounds; knockout = "
                        "the reference's sequential random knockout (default: bracket; knockout with --faithful)")
    p.add_argument("--faithful", action="store_true",
                   help="run the reference end to end: its sequential random knockout (so --selection bracket is "
                        "refused), its verdict rule (\"I choose response 1\", else response 2; no retry), its "
                        "pre-check rule and judge inputs, and an error row where it crashes on a candidate "
                        "missing its tags. Without it: robust verdict parsing, one retry, then a seeded "
                        "tie-break; a candidate missing its tags loses")
    p.add_argument("--max-sentences", type=int, default=64, help="sentence_beam: most sentence steps per item")
    p.add_argument("--concurrency", type=int, default=64, help="max model calls in flight")
    p.add_argument("--items-in-flight", type=int, default=None, help="items solved at once (default: --concurrency)")
    p.add_argument("--rpm", type=int, default=None, help="requests per minute cap")
    p.add_argument("--tpm", type=int, default=None, help="tokens per minute cap")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per call attempt")
    p.add_argument("--max-retries", type=int, default=5, help="retries after the first attempt")
    p.add_argument("--backoff", type=float, default=0.5, help="base delay (s) of exponential back-off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--max-tokens", type=int, default=2048, help="max new tokens per call")
    p.add_argument("--max-image-side", type=int, default=1024, help="images are downscaled to this")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")
    p.add_argument("--cache", type=Path, default=None, help="cache file (default: DIR/cache.sqlite)")
    p.add_argument("--client", choices=("auto", "direct", "litellm"), default="auto",
                   help="auto: direct HTTP for OpenAI-compatible endpoints, LiteLLM otherwise")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stagewise", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = sub.add_parser("generate", help="run one graph over ITEMS.jsonl")
    _add_run_options(gen)
    gen.add_argument("--graph", default="chain",
                     help=f"one of {', '.join(GRAPH_NAMES)}, a graph .toml file, or FILE.py:function")
    gen.set_defaults(func=_generate)

    cmp = sub.add_parser("compare", help="run several graphs on the same items and write a report")
    _add_run_options(cmp)
    cmp.add_argument("--graphs", default="chain,best_of_n,stage_beam",
                     help="comma-separated graphs (names, .toml files or FILE.py:function)")
    cmp.set_defaults(func=_compare)

    # commands whose modules import their heavy parts (torch, vllm) only when they run
    from stagewise import demo, serve
    from trainer import cli as trainer_cli

    for module in (trainer_cli, serve, demo):
        module.register(sub)
    return parser


def _resolve_selection(args: argparse.Namespace) -> None:
    """--faithful means the reference's knockout; asking for the bracket as well is a contradiction."""
    if args.faithful and args.selection == "bracket":
        raise UsageError("--faithful runs the reference's sequential knockout: drop --selection bracket, "
                         "or drop --faithful")
    args.selection = args.selection or ("knockout" if args.faithful else "bracket")


def _check_common(args: argparse.Namespace) -> None:
    _resolve_selection(args)
    if not args.model:
        raise UsageError("no model: pass --model (e.g. hosted_vllm/NAME --api-base URL) or set STAGEWISE_MODEL")
    if not args.items.is_file() or not os.access(args.items, os.R_OK):
        raise UsageError(f"cannot read input file {args.items}")
    for name in ("n", "concurrency", "max_tokens"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")


def _generate(args: argparse.Namespace) -> int:
    from stagewise.jobs import run_generate

    _check_common(args)
    summary = run(run_generate(args))
    print(f"{summary['items']} items: {summary['ok']} ok, {summary['error']} error · "
          f"{summary['calls']} calls · {summary['tokens']} tokens · ${summary['cost_usd']:.4f} · "
          f"results in {args.out / 'results.jsonl'}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from stagewise.jobs import run_compare

    _check_common(args)
    report = run(run_compare(args))
    print(report["markdown"])
    print(f"report: {args.out / 'report.md'}, {args.out / 'report.json'}, {args.out / 'report.png'}; "
          f"per-graph results and traces in {args.out}/<graph>/")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"stagewise: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stagewise: interrupted; finished items are saved, rerun the same command to resume",
              file=sys.stderr)
        return 130
