"""Training options and their validation, importable without torch (the CLI checks usage first)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.data import detect


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


def check(cfg: TrainConfig) -> None:
    if cfg.merge and not cfg.lora:
        raise UsageError("--merge needs --lora (a full fine-tune has nothing to merge)")
    for name in ("epochs", "batch_size", "global_batch"):
        if getattr(cfg, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("grad_accum", "max_steps", "save_every", "max_length"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if cfg.max_minutes is not None and cfg.max_minutes <= 0:
        raise UsageError("--max-minutes must be positive")
    if not 0 < cfg.lr_decay <= 1:
        raise UsageError("--lr-decay must be in (0, 1]")
    if cfg.lr <= 0:
        raise UsageError("--lr must be positive")
    if not (Path(cfg.base) / "config.json").is_file():
        raise UsageError(f"--base {cfg.base}: not a model folder (no config.json)")
    try:
        detect(cfg.data)
    except (OSError, ValueError) as e:
        raise UsageError(f"DATA: {e}") from None
    if cfg.resume and not (Path(cfg.resume) / "trainer_state.json").is_file():
        raise UsageError(f"--resume {cfg.resume}: not a checkpoint (no trainer_state.json)")
