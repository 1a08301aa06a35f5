"""Supervised fine-tuning of a vision-language model on four-stage traces, read top to bottom.

Defaults are the paper's recipe (docs/reference.md): full fine-tune, AdamW lr 1e-5 with
weight decay 0, lr ×0.85 each epoch (StepLR, no warmup), 3 epochs, global batch 32, bf16 mixed precision
where the hardware has it, no gradient clipping, seed 42, loss on the assistant's tokens only.

One process or many: it runs as is, and under ``accelerate launch`` / ``torchrun`` (DDP or FSDP, see
trainer/README.md) through Accelerate. Each rank takes a strided slice of the epoch's seeded
permutation, padded so every rank does the same number of micro-batches (FSDP needs lockstep); a
resume replays the same order and skips the micro-batches already done.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from trainer import data as datalib
from trainer.arch import arch_of
from trainer.collate import IGNORE, Collator
from trainer.config import TrainConfig, UsageError, check
from trainer.save import save_model


@dataclass
class Result:
    run: dict                        # what run.json holds
    model: object = field(repr=False)  # the trained model, unwrapped (a PeftModel with lora)
    processor: object = field(repr=False)


COUNTERS = ("examples_seen", "tokens", "supervised_tokens", "skipped_images")  # per rank while running
MODEL_KEYS = ("base", "lora", "freeze_vision")  # in a checkpoint's layout; checkpoints before them lack them


def base_id(base) -> str:
    """The base model as a resume compares it: model_type and a digest of config.json, so a copied or
    moved base still matches and a model of another shape does not."""
    config = json.loads((Path(base) / "config.json").read_text())
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    return f"{config.get('model_type')} {digest}"


def first_line(e: Exception) -> str:
    """A library error's gist for a one-line usage error (transformers' run on with hub advice)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0].split(". If you were trying")[0]


def lm_loss(logits, labels):
    """Mean next-token cross-entropy over supervised tokens; 0 (not NaN) when there are none."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:].to(logits.device)
    n = (labels != IGNORE).sum()
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                            ignore_index=IGNORE, reduction="sum")
    return total / n.clamp(min=1)


def epoch_order(n: int, epoch: int, seed: int, world: int, rank: int, lengths: list[int] | None = None,
                group: int = 1) -> list[int]:
    """This rank's example indices for an epoch: a seeded permutation, padded by wrapping around so
    that all ranks get the same count, then strided by rank.

    With `lengths` (--group-by-length), each run of 50 micro-batches of the permutation (`group` examples
    each: the batch size times the ranks) is sorted by length and cut into micro-batches, whose order is
    then shuffled: a micro-batch holds dialogs of about one length and pads little, and the epoch still
    mixes short and long ones (Hugging Face's group_by_length, with the order kept reproducible)."""
    g = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=g).tolist()
    if lengths is not None:
        grouped: list[int] = []
        for start in range(0, n, 50 * group):
            run = sorted(order[start:start + 50 * group], key=lambda i: -lengths[i])
            batches = [run[i:i + group] for i in range(0, len(run), group)]
            grouped += [i for b in torch.randperm(len(batches), generator=g).tolist() for i in batches[b]]
        order = grouped
    order += order[:(-n) % world]
    return order[rank::world]


def dialog_length(ex: datalib.Example) -> int:
    """A dialog's length for --group-by-length: its characters (tokens would need the tokenizer up front)."""
    return sum(len(user) + len(assistant) for user, assistant in ex.turns)


def train(cfg: TrainConfig) -> Result:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from transformers import AutoModelForImageTextToText, AutoProcessor

    t0 = time.time()
    check(cfg)
    try:
        arch = arch_of(cfg.base)
    except (OSError, ValueError) as e:
        raise UsageError(str(e)) from None

    # -- processes, precision -------------------------------------------------------------------
    precision = None if os.environ.get("ACCELERATE_MIXED_PRECISION") else (
        "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no")
    # Several processes and no GPU (torchrun on CPU): Accelerate needs cpu=True to pick gloo DDP.
    cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    # LLaVA never uses its CLIP tower's last layers (it reads a hidden layer), so DDP must not wait
    # for their gradients.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    acc = Accelerator(mixed_precision=precision, cpu=cpu, kwargs_handlers=[ddp])
    world, rank, main = acc.num_processes, acc.process_index, acc.is_main_process
    if main and not arch.tested:
        print(f"warning: {arch.model_type} is supported but not covered by trainer's tests", file=sys.stderr)
    set_seed(cfg.seed)
    out = Path(cfg.out)

    # -- data -------------------------------------------------------------------------------------
    try:
        examples, counts, fmt = datalib.load(cfg.data, image_root=cfg.image_root)
    except (OSError, ValueError) as e:
        raise UsageError(str(e)) from None
    if not examples:
        raise UsageError(f"{cfg.data}: no usable rows ({counts.as_dict()})")
    dataset = datalib.Dialogs(examples)
    lengths = [dialog_length(ex) for ex in examples] if cfg.group_by_length else None
    try:  # a base without processor files, or (below) without weights, is bad usage, not a crash
        processor = AutoProcessor.from_pretrained(cfg.base)
    except (OSError, ValueError) as e:
        raise UsageError(f"--base {cfg.base}: cannot load its processor ({first_line(e)})") from None
    collator = Collator(processor, cfg.max_length)
    bs = cfg.batch_size
    ga = cfg.grad_accum or max(1, cfg.global_batch // (bs * world))
    micro_per_epoch = math.ceil(math.ceil(len(examples) / world) / bs)
    steps_per_epoch = math.ceil(micro_per_epoch / ga)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    workers = cfg.workers if cfg.workers is not None else (4 if torch.cuda.is_available() else 0)

    # -- what a resume must match: the epoch order it replays, and the model its weights fit ----------
    layout = {"examples": len(examples), "world": world, "batch_size": bs, "grad_accum": ga, "seed": cfg.seed,
              **({"group_by_length": True} if cfg.group_by_length else {}),
              "base": base_id(cfg.base), "lora": [cfg.lora_r, cfg.lora_alpha] if cfg.lora else None,
              "freeze_vision": cfg.freeze_vision}
    if cfg.resume:  # checked before the model loads: a mismatch is one line, not a state_dict traceback
        saved = json.loads((Path(cfg.resume) / "trainer_state.json").read_text())
        theirs = saved["layout"]
        mine = {k: v for k, v in layout.items() if k in theirs or k not in MODEL_KEYS}  # older checkpoints
        if theirs != mine:
            raise UsageError(f"--resume {cfg.resume}: saved for {theirs}, this run is {mine}")

    # -- model --------------------------------------------------------------------------------------
    # fp32 master weights; Accelerate's bf16 autocast does the math (pure bf16 weights would round
    # away most 1e-5 updates).
    try:
        model = AutoModelForImageTextToText.from_pretrained(cfg.base, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise UsageError(f"--base {cfg.base}: cannot load its weights ({first_line(e)})") from None
    width = model.config.get_text_config().hidden_size
    if cfg.lora and cfg.lora_r > width:  # a rank past the layers' width adds nothing but memory
        raise UsageError(f"--lora-r must be from 1 to {width} (this model's hidden size), not {cfg.lora_r}")
    if cfg.freeze_vision:
        model.get_submodule(arch.vision).requires_grad_(False)
    if cfg.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                 target_modules=arch.lora_targets, task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable, n_params = sum(p.numel() for p in params), sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    model, optimizer = acc.prepare(model, optimizer)
    model.train()

    # -- state, resume ----------------------------------------------------------------------------
    state = {"step": 0, "epoch": 0, "micro": 0, "losses": [], **dict.fromkeys(COUNTERS, 0)}
    if cfg.resume:
        acc.load_state(cfg.resume)
        state.update(saved["state"])
        if not main:  # counters are saved as totals over ranks: rank 0 carries them on
            state.update(dict.fromkeys(COUNTERS, 0))

    def totals() -> dict:
        """COUNTERS summed over ranks (every rank must call this)."""
        t = acc.reduce(torch.tensor([state[k] for k in COUNTERS], device=acc.device), "sum")
        return dict(zip(COUNTERS, t.tolist()))

    def save_checkpoint():
        path = out / "checkpoints" / f"step-{state['step']}"
        acc.save_state(str(path))
        saved = {**state, **totals()}
        if main:
            (path / "trainer_state.json").write_text(json.dumps({"layout": layout, "state": saved}))
        acc.wait_for_everyone()

    # -- loop ---------------------------------------------------------------------------------------
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[info]}"), disable=not (main and cfg.progress))
    task = bar.add_task("train", total=total_steps, completed=state["step"], info="")
    last_batch, window, t_loop, stopped = None, [], time.time(), "steps"

    def out_of_time() -> bool:
        """Whether --max-minutes has passed on any rank (all ranks must call this and stop together)."""
        late = float(time.time() - t_loop >= 60 * cfg.max_minutes)
        return acc.reduce(torch.tensor(late, device=acc.device), "max").item() > 0
    with bar:
        while state["step"] < total_steps:
            lr = cfg.lr * cfg.lr_decay ** state["epoch"]
            for group in optimizer.param_groups:
                group["lr"] = lr
            mine = epoch_order(len(examples), state["epoch"], cfg.seed, world, rank, lengths, bs * world)
            loader = torch.utils.data.DataLoader(
                torch.utils.data.Subset(dataset, mine[state["micro"] * bs:]), batch_size=bs,
                collate_fn=collator, num_workers=workers)
            for batch in loader:
                m = state["micro"]
                in_step = min(ga, micro_per_epoch - (m // ga) * ga)  # the epoch's last step may be short
                state["skipped_images"] += batch.pop("skipped")
                scale = 1.0
                if "input_ids" not in batch:  # every image failed to decode: keep ranks in lockstep
                    batch, scale = last_batch, 0.0  # by redoing the last batch with zero weight
                if batch is not None:
                    last_batch = batch
                    batch = {k: v.to(acc.device) for k, v in batch.items()}
                    labels = batch.pop("labels")
                    logits = model(**batch, use_cache=False).logits
                    loss = lm_loss(logits, labels)
                    acc.backward(loss * (scale / in_step))
                    if scale:
                        window.append(loss.item())
                        state["tokens"] += int(batch["attention_mask"].sum())
                        state["supervised_tokens"] += int((labels[:, 1:] != IGNORE).sum())
                        state["examples_seen"] += labels.shape[0]
                state["micro"] = m = m + 1
                if m % ga and m < micro_per_epoch:
                    continue
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                # the mean over every rank's scored micro-batches; None (JSON null, not NaN) for a step
                # in which no image decoded, so run.json stays strict JSON
                total, count = acc.reduce(torch.tensor([sum(window), len(window)], device=acc.device),
                                          "sum").tolist()
                step_loss = round(total / count, 6) if count else None
                window = []
                state["step"] += 1
                state["losses"].append(step_loss)
                shown = "none (no image decoded)" if step_loss is None else f"{step_loss:.4f}"
                bar.update(task, completed=state["step"], info=f"loss {shown}  lr {lr:.2e}")
                if cfg.save_every and state["step"] % cfg.save_every == 0:
                    save_checkpoint()
                if cfg.max_minutes and out_of_time():
                    total_steps = state["step"]
                    stopped = "time"
                    if cfg.save_every and state["step"] % cfg.save_every:  # so the run can be resumed
                        save_checkpoint()
                if state["step"] >= total_steps:
                    break
            else:  # the epoch ran to its end
                state["epoch"] += 1
                state["micro"] = 0

    # -- save -------------------------------------------------------------------------------------
    acc.wait_for_everyone()
    train_s = time.time() - t_loop
    state_dict = acc.get_state_dict(model)  # full weights on rank 0, gathered under FSDP
    model = acc.unwrap_model(model)
    state.update(totals())
    if main:
        save_model(cfg, model, processor, state_dict, out)
        run = {
            "data": str(cfg.data), "format": fmt, "counts": counts.as_dict(),
            "base": str(cfg.base), "arch": arch.model_type, "mode": "lora" if cfg.lora else "full",
            "merged": cfg.merge, "freeze_vision": cfg.freeze_vision,
            "params": n_params, "trainable_params": n_trainable,
            "world_size": world, "batch_size": bs, "grad_accum": ga, "global_batch": bs * ga * world,
            "lr": cfg.lr, "lr_decay": cfg.lr_decay, "epochs_planned": cfg.epochs, "max_steps": cfg.max_steps,
            "max_minutes": cfg.max_minutes, "group_by_length": cfg.group_by_length, "stopped_by": stopped,
            "precision": acc.mixed_precision, "steps": state["step"],
            "epochs_done": state["epoch"] + state["micro"] / micro_per_epoch,
            "examples_seen": state["examples_seen"], "tokens": state["tokens"],
            "supervised_tokens": state["supervised_tokens"], "skipped_images": state["skipped_images"],
            "final_loss": next((x for x in reversed(state["losses"]) if x is not None), None),
            "losses": state["losses"],
            "resumed_from": cfg.resume, "train_s": round(train_s, 3), "wall_s": round(time.time() - t0, 3),
        }
        (out / "run.json").write_text(json.dumps(run, indent=2))
    else:
        run = {}
    acc.wait_for_everyone()
    return Result(run=run, model=model, processor=processor)
