"""Training options and their validation, importable without torch (the CLI checks usage first)."""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from trainer.data import detect

SEED_MAX = 2**32 - 1  # Accelerate's set_seed also seeds numpy, which takes no more
INT_MAX = 2**31 - 1   # no count means more; a bigger one overflows C integers (islice, torch, tokenizers)


class UsageError(ValueError):
    """Bad options or inputs: the CLI prints the message and exits 2."""


@dataclass
class TrainConfig:
    data: str
    base: str
    out: str
    epochs: int = 3
    lr: float = 1e-5
    lr_decay: float = 0.85           # per epoch
    global_batch: int = 32           # sets grad_accum when it is not given
    batch_size: int = 4              # per device, per micro-batch
    grad_accum: int | None = None
    max_steps: int | None = None     # optimizer steps; overrides epochs
    max_minutes: float | None = None  # stop (and save) after this much training time, whatever is left
    max_length: int | None = None    # truncate longer sequences (the paper truncates nothing)
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    merge: bool = False              # with lora: write base + adapter merged into OUT
    freeze_vision: bool = False
    grad_checkpointing: bool = False
    save_every: int | None = None    # checkpoint every K optimizer steps into OUT/checkpoints/step-K
    resume: str | None = None        # a checkpoint folder
    image_root: str | None = None
    workers: int | None = None       # DataLoader workers; default 4 on GPU, 0 on CPU
    group_by_length: bool = False    # micro-batches of dialogs of about one length: less padding
    seed: int = 42
    progress: bool = True


def check_seed(seed: int) -> None:
    if not 0 <= seed <= SEED_MAX:
        raise UsageError(f"--seed must be from 0 to {SEED_MAX}, not {seed}")


def check_out(option: str, path: str) -> None:
    """UsageError if folder `path` cannot be written: found now, not when the first save fails after
    the whole run. Leaves nothing behind (the command makes the folder once every check has passed):
    the probe is a uniquely named folder made and removed at once (os.access says yes to root even
    under /proc; a unique name cannot race the other ranks of a distributed run)."""
    try:
        p = Path(path).absolute()
        if p.exists() and not p.is_dir():
            raise UsageError(f"{option} {path}: exists and is not a folder")
        parent = next(d for d in [p, *p.parents] if d.exists())
        if not parent.is_dir():
            raise UsageError(f"{option} {path}: cannot be created ({parent} is a file)")
        os.rmdir(tempfile.mkdtemp(prefix=".stagewise-probe-", dir=parent))
    except OSError as e:  # read-only, no permission, /proc, a name too long
        raise UsageError(f"{option} {path}: cannot be created ({e.strerror or e})") from None


def check(cfg: TrainConfig) -> None:
    """Every option's range and every input's shape, before anything heavy loads or is written.
    (`not x > 0` rather than `x <= 0`: NaN fails every comparison.)"""
    if cfg.merge and not cfg.lora:
        raise UsageError("--merge needs --lora (a full fine-tune has nothing to merge)")
    for name in ("epochs", "batch_size", "global_batch", "lora_r", "lora_alpha", "grad_accum", "max_steps",
                 "save_every", "max_length"):
        value = getattr(cfg, name)
        if value is not None and not 1 <= value <= INT_MAX:
            raise UsageError(f"--{name.replace('_', '-')} must be from 1 to {INT_MAX}, not {value}")
    if cfg.workers is not None and not 0 <= cfg.workers <= (os.cpu_count() or 1):
        raise UsageError(f"--workers must be from 0 to {os.cpu_count() or 1} (this machine's CPUs), "
                         f"not {cfg.workers}")
    check_seed(cfg.seed)
    if cfg.max_minutes is not None and not (cfg.max_minutes > 0 and math.isfinite(cfg.max_minutes)):
        raise UsageError(f"--max-minutes must be positive and finite, not {cfg.max_minutes:g}")
    if not 0 < cfg.lr_decay <= 1:
        raise UsageError(f"--lr-decay must be in (0, 1], not {cfg.lr_decay:g}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise UsageError(f"--lr must be positive and finite, not {cfg.lr:g}")
    config = Path(cfg.base) / "config.json"
    if not config.is_file():
        raise UsageError(f"--base {cfg.base}: not a model folder (no config.json)")
    try:
        if not isinstance(json.loads(config.read_text()), dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise UsageError(f"--base {cfg.base}: config.json is unreadable ({e})") from None
    if Path(cfg.out).resolve() == Path(cfg.base).resolve():
        raise UsageError(f"--out {cfg.out} is the --base folder: the trained model would overwrite it")
    check_out("--out", cfg.out)
    try:
        detect(cfg.data)
    except (OSError, ValueError) as e:
        raise UsageError(f"DATA: {e}") from None
    if cfg.image_root and not Path(cfg.image_root).is_dir():
        raise UsageError(f"--image-root {cfg.image_root}: not a folder")
    if cfg.resume:
        state = Path(cfg.resume) / "trainer_state.json"
        if not state.is_file():
            raise UsageError(f"--resume {cfg.resume}: not a checkpoint (no trainer_state.json)")
        try:
            saved = json.loads(state.read_text())
            if not (isinstance(saved.get("layout"), dict) and isinstance(saved.get("state"), dict)):
                raise ValueError("no layout and state in it")
        except (OSError, ValueError, AttributeError) as e:
            raise UsageError(f"--resume {cfg.resume}: trainer_state.json is unreadable ({e})") from None
