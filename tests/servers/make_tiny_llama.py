"""Build a tiny, randomly initialised Llama chat model + a locally trained tokenizer.

Usage: python make_tiny_llama.py [--vlm] OUT_DIR

Run it with a Python that has torch, tokenizers and transformers (e.g. the vLLM venv
that .ci/vllm_server.sh creates). Nothing is downloaded: the byte-level BPE tokenizer is
trained on this interpreter's own stdlib sources and the weights are random (seeded), so
the model's output is gibberish -- tests must assert on structure, never on text.

Model: LlamaForCausalLM, hidden 128, 2 layers, 2 heads, head_dim 64 (vLLM's CPU attention
only supports standard head sizes), intermediate 256, tied embeddings, fp32, vocab 2048
(override with TINY_VOCAB). Tokenizer: specials <unk> <s> </s> <pad> <|im_start|> <|im_end|>,
ChatML chat template that accepts string content or a list of parts (text parts are
rendered, other parts such as image_url are dropped). Writes OUT_DIR/.complete (the
sha256 of this script) last.
--vlm builds a tiny LLaVA instead (see build_vlm).
Background: docs/local-models.md ("Tiny models for tests", "vLLM on a CPU").
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import glob  # noqa: E402
import hashlib  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import sysconfig  # noqa: E402

SEED = 0
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% elif m['content'] %}{% for c in m['content'] %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Same, plus "<image>\n" for image / image_url parts (the LlavaProcessor expands it).
VLM_CHAT_TEMPLATE = CHAT_TEMPLATE.replace(
    "{% if c['type'] == 'text' %}",
    "{% if c['type'] in ('image', 'image_url') %}<image>\n{% elif c['type'] == 'text' %}",
)
IMAGE_SIZE = 32
PATCH = 8


def _tokenizer(vocab: int):
    """Byte-level BPE trained on this interpreter's stdlib sources, as PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))[:80]
    if not files:
        raise SystemExit("no stdlib *.py sources found to train the tokenizer on")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train(
        files,
        trainers.BpeTrainer(
            vocab_size=vocab,
            special_tokens=SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "</s>"],
        model_max_length=2048,
    )


def _llama_config(hf_tok):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,  # vLLM CPU attention wants a standard head size
        max_position_embeddings=2048,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )


def _generation_config(hf_tok):
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        do_sample=True,
        max_new_tokens=32,
    )


def _check_template(hf_tok, image: bool) -> None:
    rendered = hf_tok.apply_chat_template(
        [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}},
                                         {"type": "text", "text": "hi"}]},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    want = "<|im_start|>user\n" + ("<image>\n" if image else "") + "hi<|im_end|>\n"
    assert rendered.endswith("<|im_start|>assistant\n") and want in rendered, rendered


def _finish(out: str) -> None:
    # The marker holds this script's sha256: .ci/vllm_server.sh rebuilds when the recipe changes.
    with open(__file__, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(out, ".complete"), "w") as f:
        f.write(digest)


def _start(out: str):
    import torch

    os.makedirs(out, exist_ok=True)
    marker = os.path.join(out, ".complete")
    if os.path.exists(marker):
        os.remove(marker)
    random.seed(SEED)
    torch.manual_seed(SEED)
    return int(os.environ.get("TINY_VOCAB", "2048"))


def build(out: str) -> None:
    import torch
    from transformers import LlamaForCausalLM

    hf_tok = _tokenizer(_start(out))
    hf_tok.chat_template = CHAT_TEMPLATE
    _check_template(hf_tok, image=False)
    hf_tok.save_pretrained(out)

    torch.manual_seed(SEED)
    model = LlamaForCausalLM(_llama_config(hf_tok))
    model.generation_config = _generation_config(hf_tok)
    model.save_pretrained(out)
    _finish(out)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny llama: {n_params} params, vocab {len(hf_tok)} -> {out}")


def build_vlm(out: str) -> None:
    """Tiny LLaVA: CLIP vision tower (hidden 64, 2 layers, 32 px images, patch 8 -> 16 image
    tokens) + the same tiny Llama text model; `<image>` token; LlavaProcessor with the PIL CLIP
    image processor. Serving it with vLLM needs torchvision importable (the shim that
    .ci/vllm_server.sh installs when STAGEWISE_VLLM_VISION=1)."""
    import json

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    hf_tok = _tokenizer(_start(out))
    hf_tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "</s>", "<image>"]})
    hf_tok.chat_template = VLM_CHAT_TEMPLATE
    _check_template(hf_tok, image=True)
    image_token_id = hf_tok.convert_tokens_to_ids("<image>")

    image_proc = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_proc,
        tokenizer=hf_tok,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        chat_template=VLM_CHAT_TEMPLATE,
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
    )
    processor.save_pretrained(out)

    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=64,
    )
    n_image_tokens = (IMAGE_SIZE // PATCH) ** 2
    cfg = LlavaConfig(
        vision_config=vision,
        text_config=_llama_config(hf_tok),
        image_token_index=image_token_id,
        image_seq_length=n_image_tokens,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        tie_word_embeddings=True,
    )
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(cfg)
    model.generation_config = _generation_config(hf_tok)
    model.save_pretrained(out)

    # transformers 5.x writes the CLIP tower as `vision_tower.<x>`; vLLM 0.32's LLaVA loader
    # wants the legacy `vision_tower.vision_model.<x>`. Rewrite the keys (transformers still
    # loads the rewritten file).
    for name in sorted(os.listdir(out)):
        if not name.endswith(".safetensors"):
            continue
        path = os.path.join(out, name)
        tensors = load_file(path)
        fixed = {}
        for k, v in tensors.items():
            k2 = k
            if k2.startswith("vision_tower.") and not k2.startswith("vision_tower.vision_model."):
                k2 = "vision_tower.vision_model." + k2[len("vision_tower."):]
            fixed[k2] = v.contiguous()
        save_file(fixed, path, metadata={"format": "pt"})
        index = path + ".index.json"
        if os.path.exists(index):  # single small shard expected; keep any index consistent
            os.remove(index)
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["model_type"] == "llava"
    _finish(out)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny llava: {n_params} params, {n_image_tokens} image tokens, "
          f"<image> id {image_token_id} -> {out}")


def main(argv: list[str]) -> int:
    args = argv[1:]
    vlm = "--vlm" in args
    args = [a for a in args if a != "--vlm"]
    if len(args) != 1 or args[0].startswith("-"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    (build_vlm if vlm else build)(args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
