"""`python -m chartbench items|trainset|base|score ...`: the benchmark's own commands.

    python -m chartbench items OUT --n 200 --seed 7        # OUT/ITEMS.jsonl + OUT/images/
    python -m chartbench trainset OUT --n 30000 --seed 1   # OUT/train.jsonl for `stagewise train`
    python -m chartbench mix OUT.jsonl A/train.jsonl B/onpolicy.jsonl:2 --drop trace  # one file from several
    python -m chartbench base OUT                          # the untrained base model (needs torch)
    python -m chartbench score RUN_DIR ITEMS.jsonl         # accuracy per question type vs chance
    python -m chartbench captions RUN_DIR ITEMS.jsonl      # colours and values the captions read right
    python -m chartbench judges MODEL_DIR --n 100           # the model's judges on known pairs, both orders
    python -m chartbench judges MODEL_DIR --by-type answer  # one judge, per question type
    python -m chartbench lookup MODEL_DIR --n 150           # does it find a value in its own caption?
    python -m chartbench verdicts RUN_DIR ITEMS.jsonl       # the judge on decidable pairs, per question type
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from chartbench.judging import JUDGE_KINDS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chartbench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("items", help="write a seeded benchmark: OUT/ITEMS.jsonl + images")
    p.add_argument("out")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("trainset", help="write OUT/train.jsonl: teacher traces + judge + pre-check examples")
    p.add_argument("out")
    p.add_argument("--n", type=int, default=30000, help="charts (each gives a trace and maybe judge/check rows)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--judges", type=float, default=0.6, help="chance of a judge example per chart")
    p.add_argument("--checks", type=float, default=0.25, help="chance of a pre-check example per chart")
    p.add_argument("--types", default=None,
                   help="comma-separated question types to draw from (repeat one to weight it; default all)")
    p.add_argument("--judge-kinds", default=None,
                   help="comma-separated judge kinds to draw from (repeat one to weight it; default all, evenly)")
    p.add_argument("--one-order", action="store_true",
                   help="write each judge pair once, in a random order (default: both orders, two rows)")
    p.add_argument("--workers", type=int, default=1, help="processes writing the set (default 1)")
    p = sub.add_parser("onpolicy", help="write OUT/onpolicy.jsonl: judge examples from a model's own sampled answers")
    p.add_argument("out")
    p.add_argument("--model", required=True, help="the model folder to sample from")
    p.add_argument("--n", type=int, default=10000, help="charts (each sampled --samples times)")
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--temperatures", default="1.5", help="comma-separated; charts take them in turn")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--batch", type=int, default=256, help="charts per generate call")
    p.add_argument("--types", default=None,
                   help="comma-separated question types to draw from (repeat one to weight it; default all)")
    p.add_argument("--stages", default=None,
                   help="comma-separated stages to sample also one at a time, after the teacher's earlier stages, "
                        "as stage_beam asks them (e.g. conclusion; default none: whole answers only)")
    p.add_argument("--workers", type=int, default=1, help="processes drawing the charts (default 1)")
    p = sub.add_parser("mix", help="write OUT (jsonl): training files joined, each PATH:N taken N times, "
                                   "kinds dropped, image paths made absolute")
    p.add_argument("out")
    p.add_argument("sources", nargs="+", metavar="PATH[:N]")
    p.add_argument("--drop", default="", help="comma-separated row kinds to leave out (e.g. trace: judge rows only)")
    p = sub.add_parser("base", help="build the untrained base model (LLaVA, fitted tokenizer)")
    p.add_argument("out")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vision-hidden", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("score", help="accuracy per question type of a run, with chance")
    p.add_argument("run", help="a run DIR (results.jsonl) or compare DIR (one sub-folder per graph)")
    p.add_argument("items")
    p = sub.add_parser("judges", help="a model's judges on teacher-versus-corruption pairs of test charts, both orders")
    p.add_argument("model", help="a model folder")
    p.add_argument("--n", type=int, default=100, help="charts per judge kind (default 100)")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--by-type", metavar="KIND", default=None, choices=JUDGE_KINDS,
                   help="instead: one judge kind (one of %(choices)s) on --n charts of every question type, per type")
    p = sub.add_parser("lookup", help="the model finding a value in a (teacher's) caption while it writes the "
                       "reasoning, by colour and by position, and whether it reads the caption or the picture")
    p.add_argument("model", help="a model folder")
    p.add_argument("--n", type=int, default=150, help="items per question type (default 150)")
    p.add_argument("--seed", type=int, default=99)
    p = sub.add_parser("captions", help="share of a run's captions that read the colours and values right")
    p.add_argument("run", help="a run DIR (results.jsonl) or compare DIR (one sub-folder per graph)")
    p.add_argument("items")
    p = sub.add_parser("verdicts", help="a run's judge on its decidable pairs (a right and a wrong final answer), "
                       "per question type, and what it said where it chose wrong")
    p.add_argument("run", help="a run DIR (results.jsonl) or compare DIR (one sub-folder per graph)")
    p.add_argument("items")
    p.add_argument("--show", type=int, default=0, metavar="K", help="print the first K wrong verdicts of each run")
    args = parser.parse_args(argv)
    t0 = time.time()
    for name in ("run", "items", "model"):  # what a command reads must be there: one line, not a traceback
        path = getattr(args, name, None)
        if path is not None and not Path(path).exists():
            parser.error(f"{name} {path}: no such file or folder")
    for name in ("n", "workers"):
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    for name in ("judges", "checks"):
        if getattr(args, name, None) is not None and not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name} is a chance, between 0 and 1")

    def names(text: str | None, known: tuple[str, ...], what: str) -> tuple[str, ...]:
        """A comma-separated list of `known` names (repeats kept: they weight), or all of them."""
        chosen = tuple(t.strip() for t in text.split(",") if t.strip()) if text else known
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            parser.error(f"unknown {what}(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return chosen

    if args.command == "items":
        from chartbench.bench import write_items

        path = write_items(args.out, args.n, args.seed)
        print(f"wrote {args.n} items to {path} ({time.time() - t0:.1f} s)")
    elif args.command == "trainset":
        from chartbench.questions import TYPES
        from chartbench.trainset import Mix, write_trainset

        types = names(args.types, TYPES, "question type")
        kinds = names(args.judge_kinds, JUDGE_KINDS, "judge kind")
        mix = Mix(judges=args.judges, checks=args.checks, judge_kinds=kinds, both_orders=not args.one_order)
        path, counts = write_trainset(args.out, args.n, args.seed, mix, types, workers=args.workers)
        print(f"wrote {sum(counts.values())} rows ({dict(counts)}) to {path} ({time.time() - t0:.1f} s)")
    elif args.command == "onpolicy":
        from chartbench.onpolicy import write_onpolicy
        from chartbench.questions import TYPES
        from stages.tags import STAGES

        temps = tuple(float(t) for t in args.temperatures.split(",") if t.strip())
        path, tally = write_onpolicy(args.out, args.model, args.n, args.seed, samples=args.samples,
                                     temperatures=temps, top_p=args.top_p, batch=args.batch,
                                     types=names(args.types, TYPES, "question type"),
                                     stages=names(args.stages, STAGES, "stage") if args.stages else (),
                                     workers=args.workers)
        rows = sum(v for k, v in tally.items() if not k.startswith("T"))
        print(f"wrote {rows} rows to {path} ({time.time() - t0:.1f} s)")
        for k in sorted(tally):
            print(f"  {k}: {tally[k]}")
    elif args.command == "mix":
        from chartbench.mix import parse_source, write_mix

        try:
            sources = [parse_source(s) for s in args.sources]
            missing = [str(p) for p, _ in sources if not p.is_file()]
            if missing:
                parser.error(f"no such file: {', '.join(missing)}")
            counts = write_mix(args.out, sources, frozenset(k.strip() for k in args.drop.split(",") if k.strip()))
        except ValueError as e:
            parser.error(str(e))
        print(f"wrote {sum(counts.values())} rows ({dict(sorted(counts.items()))}) to {args.out} "
              f"({time.time() - t0:.1f} s)")
    elif args.command == "base":
        from chartbench.base import build

        out = build(args.out, hidden=args.hidden, layers=args.layers, vision_hidden=args.vision_hidden,
                    vocab_size=args.vocab_size, seed=args.seed)
        print(f"wrote the base model to {out} ({time.time() - t0:.1f} s)")
    elif args.command == "judges":
        from chartbench.judgebench import judge_bench, judge_by_type

        if args.by_type:
            print(f"| {args.by_type} judge: question type | pairs | accuracy (both orders) | names the second |")
            print("|---|---|---|---|")
            for qtype, r in judge_by_type(args.model, args.by_type, args.n, args.seed).items():
                print(f"| {qtype} | {r['pairs']} | {r['accuracy']:.2f} | {r['second_rate']:.2f} |")
            return 0
        print("| judge | pairs | accuracy (both orders) | names the second |")
        print("|---|---|---|---|")
        for kind, r in judge_bench(args.model, args.n, args.seed).items():
            if kind == "check":
                print(f"| reasoning pre-check | {r['checks']} checks | {r['accuracy']:.2f} | – |")
            else:
                print(f"| {kind} | {r['pairs']} | {r['accuracy']:.2f} | {r['second_rate']:.2f} |")
    elif args.command == "lookup":
        from chartbench.lookup import lookup_bench

        print("| question | value named by | items | right (on the teacher's caption) | chance | "
              "with the caption's values shuffled: names the caption's | names the picture's |")
        print("|---|---|---|---|---|---|---|")
        for qtype, r in lookup_bench(args.model, args.n, args.seed).items():
            print(f"| {qtype} | {r['by']} | {r['items']} | {r['right']:.2f} | {r['chance']:.2f} | "
                  f"{r['follows_caption']:.2f} | {r['follows_image']:.2f} |")
    elif args.command == "captions":
        from chartbench.captions import caption_scores
        from chartbench.score import run_dirs

        print("| run | charts | captions | colours right | values right | whole reading right | bars: colour right |")
        print("|---|---|---|---|---|---|---|")
        for d in run_dirs(args.run):
            for kind, s in caption_scores(d / "results.jsonl", args.items).items():
                print(f"| {d.name} | {kind} | {s['captions']} | {s['colours']:.2f} | {s['values']:.2f} | "
                      f"{s['exact']:.2f} | {s.get('bars', float('nan')):.2f} |")
    elif args.command == "verdicts":
        from chartbench.score import run_dirs
        from chartbench.verdicts import SLIPS, slips, verdicts_by_type

        print("| run | question type | decidable pairs | judge right | accuracy |")
        print("|---|---|---|---|---|")
        shown = []
        for d in run_dirs(args.run):
            rows, wrong = verdicts_by_type(d, args.items)
            for qtype, r in rows.items():
                print(f"| {d.name} | {qtype} | {r['decidable']} | {r['correct']} | {r['accuracy']:.2f} |")
            shown += [(d.name, w) for w in wrong[:args.show]]
        print("\n| run | whole-answer verdicts on decidable pairs | first slip: none | working | quote | check | "
              "pick | form |")
        print("|---|---|---|---|---|---|---|---|")
        for d in run_dirs(args.run):
            for verdict, tally in slips(d, args.items).items():
                if tally:
                    print(f"| {d.name} | {verdict}: {sum(tally.values())} | "
                          + " | ".join(str(tally[s]) for s in ("none",) + SLIPS) + " |")
        for name, w in shown:
            print(f"\n{name} {w['item']} ({w['stage']} judge): reference {w['reference']}, response 1 concludes "
                  f"{w['conclusions'][0]!r}, response 2 {w['conclusions'][1]!r}; the judge said:")
            for text in w["said"]:
                print(f"  {text}")
    else:
        from chartbench.score import score_runs, table

        print(table(score_runs(args.run, args.items)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
