"""`stagewise` command line: the composition root. It may import every package; nothing imports it.

Heavy parts load lazily: `generate` never imports torch, and LiteLLM only when a model needs it.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from engine.errors import UsageError
from engine.pricing import env_price
from stages.prompts import check_prompts
from engine.loop import run
from stagewise.outcome import exit_status, summary_line

GRAPH_NAMES = ("chain", "best_of_n", "sentence_beam", "stage_beam", "vote")

DESCRIPTION = """\
Make vision-language models reason step by step, the LLaVA-CoT way: SUMMARY -> CAPTION -> REASONING ->
CONCLUSION, each in its own tag, with an LLM judge picking among candidates at each stage. Runs over
JSONL datasets of any size: concurrent, rate-limited, retried, cached, resumable, traced. "The
reference" in these helps is LLaVA-CoT's released code (github.com/PKU-YuanGroup/LLaVA-CoT), whose
stage-level beam search stagewise reproduces."""

REFERENCE = "\"The reference\" below is LLaVA-CoT's released code (github.com/PKU-YuanGroup/LLaVA-CoT)."

EPILOG = """\
examples:
  stagewise demo                  the whole job offline on a CPU: a chart benchmark, a built-in model
  stagewise generate items.jsonl --out runs/a --model openai/gpt-4o-mini          (OPENAI_API_KEY)
  stagewise generate items.jsonl --out runs/b --graph stage_beam --n 4 \\
      --model hosted_vllm/NAME --api-base http://127.0.0.1:8000/v1               (a vLLM server)
  stagewise compare items.jsonl --out runs/c --graphs chain,best_of_n,stage_beam --model hf:MODEL_DIR
  stagewise train runs/b --base MODEL_DIR --out trained/       (fine-tune on the run's answers)

Rerun a command on the same --out to resume it. Exit status: 0 every item ok, 3 some rows are errors,
2 bad usage, 130 interrupted. Each command's options: stagewise COMMAND --help. File formats,
architecture, limits and providers: docs/README.md in the repository."""


class _HelpFormatter(argparse.HelpFormatter):
    """Every option shows its default; text laid out by hand (examples) keeps its line breaks.

    A default is appended unless the help already says it, or the option is a flag or required; an
    option whose default is None must say in its help what happens then."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if ("default" in help_text or not action.option_strings or action.nargs == 0 or action.required
                or action.default in (None, argparse.SUPPRESS)):
            return help_text
        return help_text + " (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """Bad usage is one clear line and exit 2, not a screen of usage text."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"stagewise: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stagewise")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("items", type=Path, help="ITEMS.jsonl: {id, question, image?, answer?, choices?} per line")
    p.add_argument("--out", type=Path, required=True,
                   help="output folder for results.jsonl, traces.jsonl, summary.json and the cache (required)")
    p.add_argument("--model", default=os.environ.get("STAGEWISE_MODEL"),
                   help="what generates (and judges, unless --judge-model). A LiteLLM provider/model string: "
                        "openai/gpt-4o-mini, anthropic/claude-..., gemini/..., any provider LiteLLM routes (keys "
                        "from the provider's usual variable, e.g. OPENAI_API_KEY); an OpenAI-compatible server "
                        "(vLLM, stagewise serve) as hosted_vllm/NAME or openai/NAME with --api-base. Or a model "
                        "in this process: hf:DIR[?dtype=&device=&max_batch=&window_ms=&image_cache=&attn=&"
                        "threads=] (transformers; needs the hf extra) or vllm:DIR[?max_model_len=2048&dtype=..., "
                        "any vLLM engine argument] (vLLM's AsyncLLM). (default: env STAGEWISE_MODEL)")
    p.add_argument("--judge-model", default=None, help="model for judge calls (default: --model)")
    p.add_argument("--api-base", default=os.environ.get("STAGEWISE_API_BASE"),
                   help="base URL of the provider or server, e.g. http://127.0.0.1:8000/v1 (default: env "
                        "STAGEWISE_API_BASE, else the provider's own endpoint)")
    p.add_argument("--judge-api-base", default=None,
                   help="base URL for the judge model (default: --api-base for a judge on the generator's "
                        "provider, else that provider's own endpoint)")
    p.add_argument("--fallback-model", action="append", default=None, metavar="MODEL",
                   help="a model that answers the calls --model cannot (after its retries, or at once on an error "
                        "retrying cannot fix); repeat or comma-separate for a chain, tried in order. Traces and "
                        "each row's answered_by name who answered; docs/providers.md (default: none)")
    p.add_argument("--fallback-api-base", action="append", default=None, metavar="URL",
                   help="base URL for the fallback models: one for all, or one per --fallback-model in order "
                        "(default: each provider's own endpoint)")
    p.add_argument("--mode", choices=("full", "staged"), default="staged",
                   help="full: the 4-tag prompt in one call; staged: one call per stage")
    p.add_argument("--n", type=int, default=4, help="candidates per step for search graphs (1 to 128)")
    p.add_argument("--selection", choices=("bracket", "knockout"), default=None,
                   help="how a judge picks 1 of N: bracket = N-1 verdicts in log2 N concurrent rounds; knockout = "
                        "the reference's sequential random knockout (default: bracket; knockout with --faithful)")
    p.add_argument("--faithful", action="store_true",
                   help="run the reference end to end: its sequential random knockout (so --selection bracket is "
                        "refused), its verdict rule (\"I choose response 1\", else response 2; no retry), its "
                        "pre-check rule and judge inputs, and an error row where it crashes on a candidate "
                        "missing its tags. Without it: robust verdict parsing, one retry, then a seeded "
                        "tie-break; a candidate missing its tags loses")
    p.add_argument("--judge-order", choices=("first", "both"), default="first",
                   help="first: each comparison asked once, the pair in its given order; both: asked in both orders "
                        "at once (twice the judge calls), agreement decides, a disagreement is a tie broken by the "
                        "logprob margin, else at random (seeded). Not with --faithful (the reference's order only)")
    p.add_argument("--judge-logprobs", choices=("on", "off"), default="on",
                   help="on: where the judge's backend returns logprobs (OpenAI-compatible servers, vLLM, hf:), "
                        "a verdict is P(\"1\") against P(\"2\") after \"I choose response \" and a pre-check "
                        "P(\"correct\") against P(\"incorrect\"); the text rule otherwise. off: the text rule. "
                        "--faithful: off")
    p.add_argument("--max-sentences", type=int, default=64, help="sentence_beam: most sentence steps per item")
    p.add_argument("--concurrency", type=int, default=64, help="max model calls in flight")
    p.add_argument("--items-in-flight", type=int, default=None, help="items solved at once (default: --concurrency)")
    p.add_argument("--rpm", type=int, default=None, help="requests per minute cap (default: no cap)")
    p.add_argument("--tpm", type=int, default=None, help="tokens per minute cap (default: no cap)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per call attempt")
    p.add_argument("--max-retries", type=int, default=5, help="retries after the first attempt")
    p.add_argument("--backoff", type=float, default=0.5, help="base delay (s) of exponential back-off")
    p.add_argument("--max-retry-after", type=float, default=60.0,
                   help="longest pause (s) a provider's Retry-After may impose before a retry; a longer "
                        "one is cut to this")
    p.add_argument("--seed", type=int, default=0,
                   help="sent with every request (providers that support it sample reproducibly) and seeds "
                        "every random choice of selection (tie-breaks, knockout pairs)")
    p.add_argument("--temperature", type=float, default=0.6,
                   help="sampling temperature of every call, judges' too unless --judge-temperature "
                        "(the reference's value)")
    p.add_argument("--judge-temperature", type=float, default=None,
                   help="temperature of judge and pre-check calls, e.g. 0 for greedy verdicts while "
                        "candidates are sampled hot (default: --temperature)")
    p.add_argument("--top-p", type=float, default=0.9,
                   help="nucleus sampling: keep the most likely tokens up to this probability mass "
                        "(the reference's value)")
    p.add_argument("--max-tokens", type=int, default=2048, help="max new tokens per call")
    p.add_argument("--max-image-side", type=int, default=1024, help="images are downscaled to this")
    p.add_argument("--retry-errors", choices=("retryable", "all", "none"), default="retryable",
                   help="which error rows of an earlier run of DIR to run again: retryable = the provider's "
                        "or the network's (rate limit, timeout, connection, server, unreadable reply, "
                        "rejected request); all = input errors too; none = keep every row")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")
    p.add_argument("--cache", type=Path, default=None, help="cache file (default: DIR/cache.sqlite)")
    p.add_argument("--client", choices=("auto", "direct", "litellm"), default="auto",
                   help="auto: direct HTTP for OpenAI-compatible endpoints, LiteLLM otherwise")
    p.add_argument("--trace-prompts", action="store_true",
                   help="write each call's messages into traces.jsonl (`messages` of llm.call; images as a short "
                        "placeholder). Off: traces hold every reply and verdict but no prompts (size)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (a live bar on a terminal, else a plain line every 10 s and at the end)")
    ray = p.add_argument_group("on a Ray cluster (needs the ray extra; docs/scale-out.md)")
    ray.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help="run on Ray: a local cluster for this command (no ADDRESS), the one `ray start` runs "
                          "here (auto), or ray://HOST:10001. Same outputs as without it; --concurrency and "
                          "--items-in-flight then hold per actor, --rpm/--tpm for the whole cluster; several "
                          "comma-separated --api-base (or --judge-api-base) URLs are spread across the actors (default: off)")
    ray.add_argument("--ray-actors", type=int, default=2, help="engine actors, each with its own clients and model")
    ray.add_argument("--ray-batch-size", type=int, default=8, help="items per batch sent to an actor")
    ray.add_argument("--ray-gpus-per-actor", type=float, default=0.0,
                     help="GPUs per actor for an in-process model (vllm:DIR with tensor_parallel_size=N needs N)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stagewise", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    gen = sub.add_parser("generate", help="run one graph over ITEMS.jsonl",
                         description="Run one graph over ITEMS.jsonl: one row per item in DIR/results.jsonl, "
                                     "every call in DIR/traces.jsonl, totals in DIR/summary.json (docs/formats.md). "
                                     "Rerun the same command to resume. " + REFERENCE)
    _add_run_options(gen)
    gen.add_argument("--graph", default="chain",
                     help=f"one of {', '.join(GRAPH_NAMES)}, a graph .toml file, or FILE.py:function")
    gen.set_defaults(func=_generate)

    cmp = sub.add_parser("compare", help="run several graphs on the same items and write a report",
                         description="Run each graph in turn on the same items with one shared cache "
                                     "(identical requests are paid once): DIR/<graph>/ as generate writes it, "
                                     "plus DIR/report.md, report.json and report.png. " + REFERENCE)
    _add_run_options(cmp)
    cmp.add_argument("--graphs", default="chain,best_of_n,stage_beam,vote",
                     help="comma-separated graphs (names, .toml files or FILE.py:function)")
    cmp.set_defaults(func=_compare)

    # commands whose modules import their heavy parts (torch, vllm) only when they run
    from stagewise import demo, otel, serve
    from stagewise.view import command as view
    from trainer import cli as trainer_cli

    for module in (trainer_cli, serve, demo, view, otel):
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
    if args.faithful and args.judge_order == "both":
        raise UsageError("--faithful asks each pair in the reference's order only: drop --judge-order both, "
                         "or drop --faithful")
    if not args.model:
        raise UsageError("no model: pass --model (e.g. hosted_vllm/NAME --api-base URL) or set STAGEWISE_MODEL")
    for name in ("api_base", "judge_api_base"):
        if getattr(args, "ray", None) is None and "," in (getattr(args, name) or ""):
            raise UsageError(f"--{name.replace('_', '-')}: several comma-separated URLs are spread across "
                             "actors only with --ray; give one URL")
    for name, values in (("api-base", [args.api_base]), ("judge-api-base", [args.judge_api_base]),
                         ("fallback-api-base", getattr(args, "fallback_api_base", None) or [])):
        for url in (u.strip() for value in values if value for u in value.split(",") if u.strip()):
            _check_url(f"--{name}", url)
    check_sampling(args)
    if not args.items.is_file() or not os.access(args.items, os.R_OK):
        raise UsageError(f"cannot read input file {args.items}")
    for name in ("n", "concurrency", "max_tokens", "max_sentences", "max_image_side"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("rpm", "tpm"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1 (leave it out for no cap)")
    if args.items_in_flight is not None and args.items_in_flight < 1:
        raise UsageError("--items-in-flight must be at least 1 (leave it out for --concurrency)")
    if args.max_retries < 0:
        raise UsageError(f"--max-retries must be 0 or more, not {args.max_retries}")
    if not args.timeout > 0:  # `not >` also refuses nan
        raise UsageError(f"--timeout must be more than 0 seconds, not {args.timeout:g}")
    try:  # read at each call's cost: a bad one would fail every call after it was paid for
        env_price()
        check_prompts()  # STAGEWISE_PROMPTS: read when a graph is built, after the run folder is
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for name in ("backoff", "max_retry_after"):
        if not getattr(args, name) >= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be 0 or more seconds, not {getattr(args, name):g}")


MAX_SEED = 2 ** 32 - 1  # what every backend's sampler takes


def _check_url(option: str, url: str) -> None:
    """An http(s) URL with a host and a valid port, or a usage error (it would fail every call)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range or not a number)
    except ValueError as exc:
        raise UsageError(f"{option}: {url!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{option}: {url!r} is not an http(s) URL with a host, e.g. http://127.0.0.1:8000/v1")


def check_sampling(args: argparse.Namespace) -> None:
    """Sampling options every provider refuses (or that break resuming, as NaN does) are usage errors."""
    for name in ("temperature", "judge_temperature"):
        value = getattr(args, name, None)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UsageError(f"--{name.replace('_', '-')} must be a number 0 or more, not {value:g}")
    if not 0 < args.top_p <= 1:  # `not` also refuses nan
        raise UsageError(f"--top-p must be more than 0 and at most 1, not {args.top_p:g}")
    if not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed must be 0 to {MAX_SEED}, not {args.seed}")
    from search.spec import MAX_N  # one cap for --n and a TOML step's n

    if args.n > MAX_N:
        raise UsageError(f"--n must be at most {MAX_N}, not {args.n}")


def _cluster(args: argparse.Namespace) -> contextlib.AbstractContextManager[None]:
    """With --ray: connected to (or running) a Ray cluster for the command's length."""
    if args.ray is None:
        return contextlib.nullcontext()
    if args.ray_actors < 1 or args.ray_batch_size < 1 or args.ray_gpus_per_actor < 0:
        raise UsageError("--ray-actors and --ray-batch-size must be at least 1, --ray-gpus-per-actor 0 or more")
    from stagewise.cluster.driver import on_cluster

    return on_cluster(args.ray, args.ray_actors)


def _generate(args: argparse.Namespace) -> int:
    from stagewise.jobs import run_generate

    _check_common(args)
    with _cluster(args):
        summary = run(run_generate(args))
    print(summary_line(summary) + f" · results in {args.out / 'results.jsonl'}")
    return exit_status([(args.out, summary)])


def _compare(args: argparse.Namespace) -> int:
    from stagewise.jobs import run_compare

    _check_common(args)
    with _cluster(args):
        report = run(run_compare(args))
    print(report["markdown"])
    print(f"report: {args.out / 'report.md'}, {args.out / 'report.json'}, {args.out / 'report.png'}; "
          f"per-graph results and traces in {args.out}/<graph>/")
    return exit_status([(args.out / name, s) for name, s in report["summaries"].items()])


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
