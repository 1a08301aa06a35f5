"""Build tiny random vision-language models offline, for smoke tests of any pipeline.

Nothing is downloaded: a byte-level BPE tokenizer is trained here on a synthetic corpus, wrapped
with a processor and a chat template, and a randomly initialised model is saved beside it. The
output is a normal model folder (`AutoProcessor` / `AutoModelForImageTextToText` load it), so the
trainer and any backend treat it exactly like a real checkpoint; the text it generates is noise.

Two architectures:
- ``mllama``: MllamaForConditionalGeneration, the paper's (Llama-3.2-Vision) class. Its quirks
  (docs/local-models.md, "Tiny models for tests"): ``<|image|>`` must be the last id, equal to the text
  vocab size; the processor needs ``<|python_tag|>`` and a BOS; one 56 px tile needs
  ``supported_aspect_ratios=[[1, 1]]``.
- ``llava``: LlavaForConditionalGeneration (CLIP + Llama), which current vLLM serves (vLLM dropped
  Mllama in 0.10.2). Head dims are 32/64 because vLLM's CPU attention kernels only take standard
  sizes; trainer.save writes the vision weights in the layout vLLM's loader expects.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

ARCHS = ("mllama", "llava")
IMAGE_SIZE = 56  # one tile / one crop of 56 px, patch 14 -> 16 patches

MLLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
                   "<|python_tag|>"]
LLAVA_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Parts may be a string or a list of {"type": "image"|"image_url"|"text"} items, as in OpenAI chat.
_PARTS = ("{%- if m['content'] is string %}{{- m['content'] }}{%- else %}"
          "{%- for c in m['content'] %}{%- if c['type'] in ('image', 'image_url') %}{{- IMG }}"
          "{%- elif c['type'] == 'text' %}{{- c['text'] }}{%- endif %}{%- endfor %}{%- endif %}")
MLLAMA_TEMPLATE = (
    "{{- bos_token }}{%- for m in messages %}"
    "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' }}"
    + _PARTS.replace("IMG", "'<|image|>'") +
    "{{- '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
LLAVA_TEMPLATE = (
    "{%- for m in messages %}{{- '<|im_start|>' + m['role'] + '\\n' }}"
    + _PARTS.replace("IMG", "'<image>\\n'") +
    "{{- '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "grey", "brown"]
WORDS = ("the image shows a chart with bars of different heights which one is tallest answer "
         "question options compare I will first describe then reason step by step so final "
         "because higher lower left right number count how many what is this picture of photo "
         "there are two three four five six seven eight nine ten yes no A B C D")


def corpus(n: int = 3000, seed: int = 0) -> list[str]:
    """Synthetic LLaVA-CoT-like strings: enough for BPE merges on tags and common words."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        c = rng.sample(COLOURS, 3)
        words = " ".join(rng.choices(WORDS.split(), k=12))
        out.append(f"Which colour bar is the tallest? Options: A. {c[0]} B. {c[1]} C. {c[2]}\n"
                   f"<SUMMARY> I will compare the bars. </SUMMARY>\n\n<CAPTION> The chart shows "
                   f"{c[0]}, {c[1]} and {c[2]} bars. </CAPTION>\n\n<REASONING> {words}. The "
                   f"{c[1]} bar is higher. </REASONING>\n\n<CONCLUSION> B </CONCLUSION> {rng.randint(0, 999)}")
    return out


def _tokenizer(specials: list[str], bos: str | None, vocab_size: int):
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus(), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def build_mllama(vocab_size: int = 512, hidden: int = 64):
    """(model, processor) for a ~260k-parameter Mllama (at hidden 64; head dim 16)."""
    vis = hidden // 2
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessorPil,
        MllamaProcessor,
    )

    fast = _tokenizer(MLLAMA_SPECIALS, "<|begin_of_text|>", vocab_size)
    fast.bos_token, fast.eos_token, fast.pad_token = "<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>"
    fast.add_special_tokens({"additional_special_tokens": ["<|image|>"]})  # -> the last id
    fast.chat_template = MLLAMA_TEMPLATE
    image_id = fast.convert_tokens_to_ids("<|image|>")
    proc = MllamaProcessor(
        image_processor=MllamaImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, max_image_tiles=1),
        tokenizer=fast, chat_template=MLLAMA_TEMPLATE)
    vision = {"hidden_size": vis, "num_hidden_layers": 2, "num_global_layers": 1, "attention_heads": vis // 16,
              "intermediate_size": 2 * vis, "image_size": IMAGE_SIZE, "patch_size": 14, "max_num_tiles": 1,
              "intermediate_layers_indices": [1], "vision_output_dim": 2 * vis,
              "supported_aspect_ratios": [[1, 1]]}
    text = {"vocab_size": image_id, "hidden_size": hidden, "num_hidden_layers": 4,
            "num_attention_heads": hidden // 16, "num_key_value_heads": hidden // 32,
            "intermediate_size": 2 * hidden, "cross_attention_layers": [1, 3], "max_position_embeddings": 2048,
            "bos_token_id": fast.bos_token_id, "eos_token_id": fast.eos_token_id, "pad_token_id": fast.pad_token_id}
    cfg = MllamaConfig(vision_config=vision, text_config=text, image_token_index=image_id)
    return MllamaForConditionalGeneration(cfg), proc


def build_llava(vocab_size: int = 512, hidden: int = 128):
    """(model, processor) for a ~0.6M-parameter LLaVA (at hidden 128; CLIP vision + Llama text)."""
    vis = hidden // 2
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    fast = _tokenizer(LLAVA_SPECIALS, None, vocab_size)
    fast.eos_token, fast.pad_token = "<|im_end|>", "<|endoftext|>"
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    fast.chat_template = LLAVA_TEMPLATE
    image_id = fast.convert_tokens_to_ids("<image>")
    proc = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                              crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=fast, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=vis, intermediate_size=2 * vis, num_hidden_layers=2,
                                       num_attention_heads=vis // 32, image_size=IMAGE_SIZE, patch_size=14,
                                       projection_dim=vis),
        text_config=LlamaConfig(vocab_size=len(fast), hidden_size=hidden, num_hidden_layers=2,
                                num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, head_dim=64,
                                intermediate_size=2 * hidden, max_position_embeddings=2048,
                                eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
                                tie_word_embeddings=False),
        image_token_index=image_id, vision_feature_layer=-1, vision_feature_select_strategy="default",
        image_seq_length=(IMAGE_SIZE // 14) ** 2)
    return LlavaForConditionalGeneration(cfg), proc


def build(out: str | os.PathLike, arch: str, seed: int = 0, hidden: int | None = None) -> Path:
    """Build and save a tiny `arch` model with its processor into `out`; return the folder.
    `hidden` (text width; a multiple of 64) scales it up, e.g. for a GPU benchmark."""
    import torch

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {', '.join(ARCHS)}")
    torch.manual_seed(seed)
    random.seed(seed)
    builder = build_mllama if arch == "mllama" else build_llava
    model, proc = builder(**({"hidden": hidden} if hidden else {}))
    from trainer.save import save_servable

    save_servable(model, proc, out)
    return Path(out)
