"""Batched generation straight from a model folder, for the offline tools that score or sample a model
(chartbench judges, chartbench onpolicy): prompts are laid out as the engine's hf backend and the
trainer lay them out (the image first in the user turn), left-padded, on the GPU when there is one."""
from __future__ import annotations


def load(model_dir):
    """(model, processor): bf16 on a GPU, float32 on the CPU, in eval mode."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    return model, AutoProcessor.from_pretrained(model_dir)


def chat_text(proc, prompt: str, image: bool) -> str:
    """The model's input text for one user turn (the image first, as the hf backend and the trainer
    lay it out), ready for the assistant's reply."""
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": prompt}]
    return proc.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                    add_generation_prompt=True)


def generate(model, proc, prompts: list[str], images: list, *, batch: int, seed: int | None = None,
             num_return_sequences: int = 1, starts: list[str] | None = None, **sampling) -> list[str]:
    """The new text of each prompt (`num_return_sequences` in a row per prompt); `images[i]` is a PIL
    image, a path, or None for a text-only prompt; `starts[i]`, the start of the reply to continue.
    `seed` reseeds before each batch, so a batch's samples do not depend on the batches before it."""
    import torch
    from PIL import Image

    out: list[str] = []
    for start in range(0, len(prompts), batch):
        chunk = list(zip(prompts[start:start + batch], images[start:start + batch]))
        texts = [chat_text(proc, p, im is not None) + (starts[start + k] if starts else "")
                 for k, (p, im) in enumerate(chunk)]
        pictures = [[im if isinstance(im, Image.Image) else Image.open(im).convert("RGB")]
                    for _, im in chunk if im is not None]
        inputs = proc(images=pictures or None, text=texts, padding=True, padding_side="left",
                      add_special_tokens=False, return_tensors="pt").to(model.device)
        if seed is not None:
            torch.manual_seed(seed * 1_000_003 + start)
        with torch.no_grad():
            ids = model.generate(**inputs, num_return_sequences=num_return_sequences, **sampling)
        out += proc.tokenizer.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return out
