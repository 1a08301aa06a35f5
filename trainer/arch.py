"""What differs between architectures, keyed by the base model's config ``model_type``.

The architecture is read from the checkpoint, never from a flag: a flag can disagree with the weights,
the config cannot. Everything else (collation, loss, loop, saving) is shared, because the processors
and ``AutoModelForImageTextToText`` already hide the per-model inputs (Mllama's cross-attention mask and
tiles, LLaVA's expanded image tokens, Qwen's grid sizes).
"""
from __future__ import annotations

from dataclasses import dataclass

# The text tower's attention and MLP projections. A bare "q_proj" would also hit the vision encoder.
_TEXT_PROJ = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class Arch:
    model_type: str
    vision: str        # submodule frozen by --freeze-vision
    lora_targets: str  # peft target_modules regex (full match on module names)
    tested: bool       # covered by the CPU test suite with a tiny model


ARCHS = {
    "mllama": Arch("mllama", "model.vision_model", _TEXT_PROJ, True),  # Llama-3.2-Vision (the paper)
    "llava": Arch("llava", "model.vision_tower", _TEXT_PROJ, True),     # served by vLLM
    "qwen2_5_vl": Arch("qwen2_5_vl", "model.visual", _TEXT_PROJ, False),
    "qwen2_vl": Arch("qwen2_vl", "model.visual", _TEXT_PROJ, False),
}


class UnsupportedArch(ValueError):
    pass


def arch_of(base) -> Arch:
    """The Arch for a model folder, from its config.json's model_type."""
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(base).model_type
    if model_type not in ARCHS:
        raise UnsupportedArch(f"{base}: model_type {model_type!r} is not supported "
                              f"(supported: {', '.join(ARCHS)})")
    return ARCHS[model_type]
