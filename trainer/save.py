"""Writing a trained model: a folder transformers reloads and, for LLaVA, vLLM serves.

Weights go out in the base checkpoint's dtype (bf16 for Llama-3.2-Vision), not the fp32 used for
training; generation_config gets the chat template's end-of-turn token as eos so generation stops.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch


def save_servable(model, processor, out: str | os.PathLike, state_dict=None) -> None:
    """save_pretrained (of `state_dict` when given) + processor, eos in generation_config, in a
    layout vLLM loads.

    transformers 5 saves LLaVA's CLIP weights as ``vision_tower.encoder...``; vLLM's LLaVA loader
    wants the legacy ``vision_tower.vision_model.encoder...``, which transformers also reads
    (its CLIPVisionModel conversion drops the ``vision_model`` prefix on load). So rename on disk.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    eos = processor.tokenizer.eos_token_id
    if model.generation_config is not None:
        model.generation_config.eos_token_id = eos
        model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.save_pretrained(out, state_dict=state_dict)
    processor.save_pretrained(out)
    if getattr(model.config, "model_type", "") == "llava":
        _legacy_vision_keys(out)


_CLIP_KEY = re.compile(r"^((?:model\.)?vision_tower\.)(?!vision_model\.)")


def _legacy_vision_keys(out: Path) -> None:
    from safetensors.torch import load_file, save_file

    def rename(k: str) -> str:
        return _CLIP_KEY.sub(r"\1vision_model.", k)

    for f in sorted(out.glob("*.safetensors")):
        sd = load_file(f)
        if any(rename(k) != k for k in sd):
            save_file({rename(k): v for k, v in sd.items()}, f, metadata={"format": "pt"})
    index = out / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        data["weight_map"] = {rename(k): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2))


def save_model(cfg, model, processor, state_dict, out: Path) -> None:
    """OUT gets a model folder transformers (and vLLM, for LLaVA) loads; with --lora, the adapter,
    and with --merge, the merged model in OUT and the adapter in OUT/adapter. Weights are written
    in the base checkpoint's dtype (bf16 for Llama-3.2-Vision), not the fp32 used for training."""
    from transformers import AutoConfig

    dtype = getattr(AutoConfig.from_pretrained(cfg.base), "dtype", None)
    dtype = dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else None
    if cfg.lora:
        adapter_dir = out / "adapter" if cfg.merge else out
        model.save_pretrained(adapter_dir, state_dict=state_dict)
        processor.save_pretrained(adapter_dir)
        if cfg.merge:
            from peft import PeftModel
            from transformers import AutoModelForImageTextToText

            base = AutoModelForImageTextToText.from_pretrained(cfg.base, dtype=torch.float32)
            merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
            save_servable(merged.to(dtype) if dtype else merged, processor, out)
        return
    if dtype and dtype != torch.float32:
        state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
        model.config.dtype = dtype
    save_servable(model, processor, out, state_dict=state_dict)
