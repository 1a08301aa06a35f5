"""One line about a finished training run, read from its run.json: what the recipes print and TRAINING.md records.

    python -m trainer.summary OUT/run.json
"""
from __future__ import annotations

import json
import sys


def describe(run: dict) -> str:
    losses = [x for x in run["losses"] if x is not None]  # None: a step in which no image decoded
    tail = losses[-100:]
    return (f"steps {run['steps']} ({run['stopped_by']}), examples {run['examples_seen']}, "
            f"epochs {run['epochs_done']:.2f}, loss first {losses[0]:.4f} last {losses[-1]:.4f} "
            f"mean of last {len(tail)} {sum(tail) / len(tail):.4f}, train {run['train_s']:.0f} s, "
            f"precision {run['precision']}")


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        print(describe(json.load(f)))
