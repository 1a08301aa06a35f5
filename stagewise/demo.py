"""`stagewise demo`: the whole job, offline, on a laptop CPU, in a few minutes.

It draws a fresh chart benchmark (chartbench: bar and line charts with exact answers), then runs
chain, best_of_n, stage_beam and vote on it with the small vision-language model shipped in
stagewise/model/ — trained by `stagewise train` on chartbench's teacher traces and judge examples
(stagewise/model/TRAINING.md), so it answers in four stages as in LLaVA-CoT — and its judge, shipped beside
it in stagewise/model/judge/ (the same model trained further on judge examples, its own sampled candidates
among them), in-process through the transformers backend (`--model hf:DIR`). It
prints the compare table, accuracy per question type next to chance, and where the traces and the
report are. Nothing is downloaded; no API key is read.

Nothing heavy is imported here: the CLI imports this module for every command.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "model"
GRAPHS = "chain,best_of_n,stage_beam,vote"
DEFAULT_ITEMS = 100
DEFAULT_N = 4
DEFAULT_SEED = 2026      # benchmarks draw test-split charts; the model was trained on train-split ones
DEFAULT_MAX_TOKENS = 128  # a whole four-stage answer is 40-90 tokens for this model's tokenizer
DEFAULT_TEMPERATURE = 0.6  # the reference's sampling, judges' too (stagewise/model/TRAINING.md has what a
DEFAULT_TOP_P = 0.9        # hotter setting does with this model)


def available_cores() -> int:
    """Cores this process may run on (a container or taskset may allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# torch's CPU threads. Its default, one per core, oversubscribes: this process also runs the event loop
# (prompts, parsing, rows) on its own core, and an OpenMP thread that finds its core busy spins, so on a
# loaded machine the run burns several times the CPU and goes several times slower. One core is left to
# the event loop; this tiny model gains little from more threads anyway.
DEFAULT_THREADS = max(1, available_cores() - 1)

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "LITELLM_LOCAL_MODEL_COST_MAP": "True", "TOKENIZERS_PARALLELISM": "false"}


def _fail(msg: str) -> int:
    print(f"stagewise demo: error: {msg}", file=sys.stderr)
    return 2


def compare_args(items: Path, out: Path, model: str, *, n: int, seed: int, max_tokens: int,
                 graphs: str = GRAPHS, progress: bool = True, options: tuple[str, ...] = ()) -> argparse.Namespace:
    """What `stagewise compare` parses for this run: its own defaults (so a new option needs no change
    here) with the demo's choices and `options` (more compare flags: judge order, temperatures);
    stagewise.jobs reads these."""
    from stagewise.cli import build_parser, check_sampling

    argv = ["compare", str(items), "--out", str(out), "--model", model, "--graphs", graphs, "--n", str(n),
            "--seed", str(seed), "--max-tokens", str(max_tokens), "--timeout", "600", "--max-retries", "1",
            "--mode", "full"]  # full: the hf backend continues the chosen prefix, as the model was trained
    args = build_parser().parse_args(argv + list(options) + ([] if progress else ["--no-progress"]))
    args.api_base = args.judge_api_base = None  # in-process: no server, whatever the environment says
    check_sampling(args)
    return args


class OutInUse(ValueError):
    """OUT holds a demo of other items: its results would mix with these."""


def check_out(out: Path, items: int, seed: int) -> None:
    """A rerun with the same items resumes (and replays from the cache); other items need a new OUT."""
    from chartbench.bench import items_text, make_items

    if out.exists() and not out.is_dir():
        raise OutInUse(f"{out} is a file; pass a folder as --out")
    existing = out / "ITEMS.jsonl"
    if existing.is_file() and existing.read_text(encoding="utf-8") != items_text(make_items(items, seed)):
        raise OutInUse(f"{out} holds a demo of other items (another --items or --seed); "
                       f"pass a new --out or remove that folder")
    if not existing.is_file() and out.is_dir() and any(out.iterdir()):
        raise OutInUse(f"{out} is not empty and holds no demo; pass a new --out")


def limit_threads(threads: int) -> None:
    """Size torch's thread pools once, before the model loads. torch keeps the intra-op count
    process-wide (the backend's worker thread, which runs generate, sees it too), so the model string
    stays `hf:DIR` and the cache stays valid whatever --threads is; the inter-op pool can only be
    sized before its first use."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already sized or started in this process (e.g. a second demo in one test run)
        pass


def run_demo(out: Path, *, items: int = DEFAULT_ITEMS, seed: int = DEFAULT_SEED, n: int = DEFAULT_N,
             model_dir: Path = MODEL_DIR, graphs: str = GRAPHS, max_tokens: int = DEFAULT_MAX_TOKENS,
             threads: int = DEFAULT_THREADS, progress: bool = True, options: tuple[str, ...] = ()) -> dict:
    """Generate the benchmark into OUT, compare the graphs on it; returns the report plus
    `by_type` (chartbench.score) and `wall_s`."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    limit_threads(threads)
    from chartbench.bench import write_items
    from chartbench.score import score_runs, table
    from engine.loop import run
    from stagewise.jobs import run_compare

    from stagewise.jobs import resolve_graphs

    t0 = time.time()
    resolve_graphs(graphs)  # an unknown or repeated graph, or bad sampling, is bad usage before anything is written
    args = compare_args(out / "ITEMS.jsonl", out, f"hf:{model_dir}", n=n, seed=seed, max_tokens=max_tokens,
                        graphs=graphs, progress=progress, options=options)
    check_out(out, items, seed)
    out.mkdir(parents=True, exist_ok=True)
    items_path = write_items(out, items, seed)
    report = run(run_compare(args))
    names = [g.strip() for g in graphs.split(",") if g.strip()]
    by_type = score_runs(out, items_path)
    report["by_type"] = by_type
    report["by_type_markdown"] = table(by_type, names)
    report["wall_s"] = round(time.time() - t0, 1)
    return report


def judge_beside(model_dir: Path) -> Path | None:
    """The judge shipped with a model, MODEL/judge/ (the model trained further on judge examples only,
    so judging does not compete with answering for its few weights: stagewise/model/TRAINING.md), or
    None where there is none: the model then judges its own candidates."""
    folder = model_dir / "judge"
    return folder if (folder / "config.json").is_file() else None


def cmd_demo(args: argparse.Namespace) -> int:
    import importlib.util

    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        return _fail(f"needs {', '.join(missing)}: pip install -e '.[hf]' (or 'stagewise[hf]')")
    model_dir = Path(args.model).expanduser() if args.model else MODEL_DIR
    judge_dir = Path(args.judge_model).expanduser() if args.judge_model else judge_beside(model_dir)
    for folder in (model_dir, judge_dir):
        if folder and not (folder / "config.json").is_file():
            return _fail(f"no model in {folder} (expected config.json there; see stagewise/model/TRAINING.md)")
    for name in ("items", "n", "max_tokens", "threads"):
        if getattr(args, name) < 1:
            return _fail(f"--{name.replace('_', '-')} must be at least 1")
    out = Path(args.out)
    print(f"stagewise demo: {args.items} fresh chart questions (seed {args.seed}) -> {out}/ITEMS.jsonl; "
          f"graphs {args.graphs} with N={args.n}, temperature {args.temperature} (top-p {args.top_p}"
          f"{'' if args.judge_temperature is None else f', judges at {args.judge_temperature}'}), "
          f"model hf:{model_dir}{f', judge hf:{judge_dir}' if judge_dir else ''}, offline, on "
          f"{args.threads} torch thread(s) of {available_cores()} CPU core(s)", flush=True)
    try:
        report = run_demo(out, items=args.items, seed=args.seed, n=args.n, model_dir=model_dir.resolve(),
                          graphs=args.graphs, max_tokens=args.max_tokens, threads=args.threads,
                          progress=not args.no_progress,
                          options=("--judge-order", args.judge_order, "--judge-logprobs", args.judge_logprobs,
                                 "--temperature", str(args.temperature), "--top-p", str(args.top_p))
                          + (() if judge_dir is None else ("--judge-model", f"hf:{judge_dir.resolve()}"))
                          + (() if args.judge_temperature is None else
                             ("--judge-temperature", str(args.judge_temperature))))
    except OutInUse as exc:
        return _fail(str(exc))
    print()
    print(report["markdown"])
    print()
    print("accuracy per question type (chance = a uniform guess among the answers the question allows):")
    print(report["by_type_markdown"])
    print()
    print(f"done in {report['wall_s']:.0f} s. report: {out / 'report.md'} (+ report.json, report.png); "
          f"per graph: {out}/<graph>/results.jsonl (answers), traces.jsonl (every call and verdict), "
          f"summary.json; items and charts: {out / 'ITEMS.jsonl'}, {out / 'images'}/")
    from stagewise.outcome import exit_status

    return exit_status([(out / name, s) for name, s in report["summaries"].items()])


def register(subparsers) -> None:
    """Add `demo` to an argparse `_SubParsersAction` (as trainer.cli.register does)."""
    p = subparsers.add_parser(
        "demo", help="offline end-to-end demo: chart benchmark + built-in model; chain, best_of_n, stage_beam, vote",
        description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--out", default="stagewise-demo", help="output folder (default ./stagewise-demo)")
    p.add_argument("--items", type=int, default=DEFAULT_ITEMS, help=f"questions (default {DEFAULT_ITEMS})")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"benchmark and sampling seed (default {DEFAULT_SEED})")
    p.add_argument("--n", type=int, default=DEFAULT_N,
                   help=f"candidates per step for best_of_n and stage_beam (default {DEFAULT_N})")
    p.add_argument("--graphs", default=GRAPHS, help=f"graphs to compare (default {GRAPHS})")
    p.add_argument("--model", default=None,
                   help="a model folder to use instead of the shipped one (default: stagewise/model/)")
    p.add_argument("--judge-model", default=None,
                   help="a model folder for the judge calls and pre-checks (default: the model folder's judge/ "
                        "where it has one, else the model itself; pass the model folder to have it judge itself)")
    p.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                   help=f"max new tokens per call (default {DEFAULT_MAX_TOKENS})")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help=f"torch CPU threads (default {DEFAULT_THREADS}: this machine's {available_cores()} "
                        "core(s) less one for the event loop; more oversubscribes the cores)")
    p.add_argument("--judge-order", choices=("first", "both"), default="first",
                   help="as stagewise compare's: judge each pair in its order, or in both (default first)")
    p.add_argument("--judge-logprobs", choices=("on", "off"), default="on",
                   help="as stagewise compare's: verdicts from logprobs, or from the text (default on)")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                   help=f"sampling temperature (default {DEFAULT_TEMPERATURE}, the reference's; this model is so "
                        "sure of itself that its N candidates are then nearly always one text)")
    p.add_argument("--top-p", type=float, default=DEFAULT_TOP_P, help=f"nucleus sampling (default {DEFAULT_TOP_P})")
    p.add_argument("--judge-temperature", type=float, default=None,
                   help="judges' and pre-checks' temperature, e.g. 0 for greedy verdicts over hot candidates "
                        "(default: --temperature)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_demo)
