"""`stagewise train | tiny-model | export`: argparse wiring only.

The main CLI imports this module for every command, so nothing heavy is imported here: handlers
validate usage first (one line on stderr, exit 2) and import torch/transformers only when they run.
"""
from __future__ import annotations

import sys

ARCHS = ("mllama", "llava")     # trainer.tiny.ARCHS, repeated so this import stays free
EXPORT_FORMATS = ("llava-cot",)


def _usage(cmd: str, msg: str) -> int:
    print(f"stagewise {cmd}: error: {msg}", file=sys.stderr)
    return 2


def cmd_train(args) -> int:
    from trainer.config import TrainConfig, UsageError, check

    cfg = TrainConfig(
        data=args.data, base=args.base, out=args.out, epochs=args.epochs, lr=args.lr, lr_decay=args.lr_decay,
        batch_size=args.batch_size, grad_accum=args.grad_accum, max_steps=args.max_steps, max_minutes=args.max_minutes,
        max_length=args.max_length, lora=args.lora, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        merge=args.merge, freeze_vision=args.freeze_vision, grad_checkpointing=args.grad_checkpointing,
        save_every=args.save_every, resume=args.resume, image_root=args.image_root,
        workers=args.workers, group_by_length=args.group_by_length, seed=args.seed, progress=not args.no_progress)
    try:
        check(cfg)
        from trainer.train import train

        result = train(cfg)
    except UsageError as e:
        return _usage("train", str(e))
    run = result.run
    if run:  # the main process
        c = run["counts"]
        print(f"trained {run['steps']} steps on {c['kept']} of {c['rows']} rows "
              f"(dropped {c['dropped'] or 'none'}), final loss {run['final_loss']}, "
              f"{run['wall_s']:.1f} s -> {args.out} (run.json)")
    return 0


def cmd_tiny_model(args) -> int:
    from pathlib import Path

    from trainer.config import UsageError, check_out, check_seed

    if args.arch not in ARCHS:
        return _usage("tiny-model", f"--arch must be one of {', '.join(ARCHS)}, not {args.arch!r}")
    try:
        check_seed(args.seed)
        check_out("DIR", args.dir)
        Path(args.dir).mkdir(parents=True, exist_ok=True)  # fails here, not after the build
    except UsageError as e:
        return _usage("tiny-model", str(e))
    except OSError as e:
        return _usage("tiny-model", f"DIR {args.dir}: cannot be created ({e.strerror or e})")
    from trainer.tiny import build

    print(f"wrote a tiny {args.arch} model to {build(args.dir, args.arch, seed=args.seed)}")
    return 0


def cmd_export(args) -> int:
    from pathlib import Path

    if args.format not in EXPORT_FORMATS:
        return _usage("export", f"--format must be one of {', '.join(EXPORT_FORMATS)}, not {args.format!r}")
    src = Path(args.dir)
    results = src / "results.jsonl" if src.is_dir() else src
    if not results.is_file():
        return _usage("export", f"{args.dir}: no results.jsonl there")
    out = Path(args.out) if args.out else results.parent / "llava-cot.jsonl"
    if out.is_dir():
        return _usage("export", f"--out {args.out} is a folder; give a file name (.jsonl, or .json for an array)")
    from trainer.export import export

    try:
        counts = export(results, out, image_root=args.image_root)
    except OSError as e:  # e.g. an unreadable results file, a parent of --out that is a file
        return _usage("export", f"{e.filename or out}: {e.strerror or e}")
    print(f"exported {counts.kept} of {counts.rows} rows to {out} (dropped {dict(counts.dropped) or 'none'})")
    return 0


def register(subparsers) -> None:
    """Add train, tiny-model and export to an argparse `_SubParsersAction`."""
    p = subparsers.add_parser("train", help="fine-tune a vision-language model on stagewise traces",
                              description="SFT with the LLaVA-CoT recipe (lr 1e-5 x0.85/epoch, 3 epochs, "
                              "global batch 32); loss on assistant tokens only.")
    p.add_argument("data", help="a run DIR, its results.jsonl, or a LLaVA-CoT .json/.jsonl")
    p.add_argument("--base", required=True,
                   help="model folder to start from (architecture read from its config; required)")
    p.add_argument("--out", required=True, help="folder for the trained model, run.json and checkpoints/ (required)")
    p.add_argument("--epochs", type=int, default=3, help="passes over the data (the paper's 3)")
    p.add_argument("--lr", type=float, default=1e-5,
                   help="AdamW learning rate, x0.85 after each epoch (the paper's recipe)")
    p.add_argument("--lr-decay", type=float, default=0.85,
                   help="the learning rate's factor after each epoch (default 0.85, the paper's)")
    p.add_argument("--batch-size", type=int, default=4, help="per device (default 4)")
    p.add_argument("--grad-accum", type=int, default=None,
                   help="micro-batches per step (default: global batch 32 / (batch size x processes))")
    p.add_argument("--max-steps", type=int, default=None, help="stop after K optimizer steps (default: all epochs)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this many minutes of training and save the model as it is, for a run on a "
                        "machine lent for a fixed time (default: no limit)")
    p.add_argument("--max-length", type=int, default=None,
                   help="truncate sequences to this many tokens (default: no truncation, as the paper)")
    p.add_argument("--lora", action="store_true", help="train a LoRA adapter on the text tower (peft)")
    p.add_argument("--lora-r", type=int, default=8, help="with --lora: the adapter's rank")
    p.add_argument("--lora-alpha", type=int, default=16, help="with --lora: the adapter's scaling alpha")
    p.add_argument("--merge", action="store_true", help="with --lora: write the merged model (adapter in OUT/adapter)")
    p.add_argument("--freeze-vision", action="store_true", help="do not train the vision tower")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute activations to save memory")
    p.add_argument("--save-every", type=int, default=None,
                   help="checkpoint every K steps to OUT/checkpoints/ (default: no checkpoints, only the final model)")
    p.add_argument("--resume", default=None,
                   help="continue from a checkpoint folder (OUT/checkpoints/step-K) (default: start fresh)")
    p.add_argument("--image-root", default=None, help="folder relative image paths are looked up under first "
                   "(default: none; then the data file's folder, then the working directory)")
    p.add_argument("--workers", type=int, default=None, help="data loader processes (default 4 on GPU, 0 on CPU)")
    p.add_argument("--group-by-length", action="store_true",
                   help="batch dialogs of about one length together (less padding, same examples per epoch)")
    p.add_argument("--seed", type=int, default=42,
                   help="seed of the data order and every random generator (the paper's 42)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("tiny-model", help="build a tiny random VLM offline, for smoke tests")
    p.add_argument("dir", help="folder to write the model to")
    p.add_argument("--arch", required=True, help=f"one of: {', '.join(ARCHS)} (required)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.set_defaults(func=cmd_tiny_model)

    p = subparsers.add_parser("export", help="write a run's results in another dataset format")
    p.add_argument("dir", help="a run DIR (or its results.jsonl)")
    p.add_argument("--format", required=True, help=f"one of: {', '.join(EXPORT_FORMATS)} (required)")
    p.add_argument("--out", default=None, help="output file (default DIR/llava-cot.jsonl; .json writes an array)")
    p.add_argument("--image-root", default=None, help="folder relative image paths are looked up under first "
                   "(default: none; then the data file's folder, then the working directory)")
    p.set_defaults(func=cmd_export)


def main(argv=None) -> int:
    """`python -m trainer ...`: the same commands without the stagewise CLI (e.g. under accelerate)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m trainer")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
