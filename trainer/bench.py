"""Throughput check: train a small synthetic model and print steps/s, tokens/s and the loss curve.

    python -m trainer.bench [--arch llava] [--hidden 512] [--rows 512] [--steps 200] [--batch-size 16]

Everything is built offline (trainer.tiny + trainer.synth) in a temporary folder, so it runs as is on
a bare GPU machine. The numbers cover the training loop only (run.json's train_s), not loading or saving.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(prog="python -m trainer.bench")
    ap.add_argument("--arch", default="llava", choices=("mllama", "llava"))
    ap.add_argument("--hidden", type=int, default=512, help="text width (multiple of 64)")
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)

    import torch

    from trainer import synth, tiny
    from trainer.config import TrainConfig
    from trainer.train import train

    with tempfile.TemporaryDirectory() as tmp:
        base = tiny.build(Path(tmp) / "base", args.arch, hidden=args.hidden)
        synth.write_run(Path(tmp) / "run", n=args.rows)
        r = train(TrainConfig(data=str(Path(tmp) / "run"), base=str(base), out=str(Path(tmp) / "out"),
                              lr=args.lr, max_steps=args.steps, batch_size=args.batch_size, grad_accum=1,
                              workers=args.workers, progress=False)).run
    if not r:
        return 0
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    losses = [x for x in r["losses"] if x is not None]  # None: a step in which no image decoded
    every = max(1, len(losses) // 10)
    print(f"device {device} | {args.arch} hidden {args.hidden}: {r['params'] / 1e6:.2f} M params, "
          f"precision {r['precision']}, batch {r['global_batch']}")
    print(f"{r['steps']} steps in {r['train_s']:.1f} s: {r['steps'] / r['train_s']:.2f} steps/s, "
          f"{r['tokens'] / r['train_s']:.0f} tokens/s ({r['supervised_tokens'] / r['train_s']:.0f} supervised), "
          f"{r['examples_seen'] / r['train_s']:.1f} examples/s")
    print("loss: " + " ".join(f"{i + 1}:{losses[i]:.3f}" for i in range(0, len(losses), every))
          + f" {len(losses)}:{losses[-1]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
