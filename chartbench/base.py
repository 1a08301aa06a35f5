"""The untrained base model `stagewise train` starts from: a small LLaVA with a tokenizer fitted to
what the engine sends it.

Why a fitted tokenizer: the prompts are long and fixed (prompts/full.txt is ~1,700 characters); a
512-token byte BPE spends ~600 tokens on it, which on a 2-core CPU is most of the training and
inference time. Here the BPE may merge across words, so the fixed prompt text collapses to a few
dozen tokens, while stage tags, digits and line breaks stay pre-split: every stage's prefix (what a
continued generation restarts from) tokenizes exactly as inside the full answer, and numbers stay
one digit a token. Why LLaVA (not Mllama): image tokens sit in the sequence, so text-only requests
(the reasoning pre-check) run the same network as in training; and vLLM serves it.

Build it with `python -m chartbench base DIR` (weights saved in bf16; training keeps fp32 masters).
"""
from __future__ import annotations

import os
from pathlib import Path

from chartbench.charts import PALETTE
from trainer.tiny import IMAGE_SIZE, LLAVA_SPECIALS, LLAVA_TEMPLATE

# Tags, single digits, runs of newlines and colour names are their own pre-tokens (a colour is then
# one token wherever it appears); everything between may merge.
SPLIT = (r"</?[A-Z]+>|[0-9]|\n+|\b(?:" + "|".join(f"[{c[0].upper()}{c[0]}]{c[1:]}" for c in PALETTE) + r")\b")


def fit_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=LLAVA_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=64, show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.eos_token, fast.pad_token = "<|im_end|>", "<|endoftext|>"
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    fast.chat_template = LLAVA_TEMPLATE
    return fast


def build(out: str | os.PathLike, *, hidden: int = 256, layers: int = 4, vision_hidden: int = 128,
          vision_layers: int = 2, vocab_size: int = 2048, corpus_items: int = 1500, seed: int = 0) -> Path:
    """Write the base model folder (random weights, fitted tokenizer, processor, chat template)."""
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from chartbench.trainset import corpus
    from trainer.save import save_servable

    torch.manual_seed(seed)
    fast = fit_tokenizer(corpus(corpus_items), vocab_size)
    image_id = fast.convert_tokens_to_ids("<image>")
    proc = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                              crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=fast, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                       num_hidden_layers=vision_layers, num_attention_heads=max(1, vision_hidden // 32),
                                       image_size=IMAGE_SIZE, patch_size=14, projection_dim=vision_hidden),
        text_config=LlamaConfig(vocab_size=len(fast), hidden_size=hidden, num_hidden_layers=layers,
                                num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, head_dim=64,
                                intermediate_size=2 * hidden, max_position_embeddings=2048,
                                eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
                                tie_word_embeddings=False),
        image_token_index=image_id, vision_feature_layer=-1, vision_feature_select_strategy="default",
        image_seq_length=(IMAGE_SIZE // 14) ** 2)
    model = LlavaForConditionalGeneration(cfg).to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    save_servable(model, proc, out)
    return Path(out)
