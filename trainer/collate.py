"""Dialogs -> model inputs with labels on the assistant's tokens only (the paper's loss).

The image goes in the first user turn, as in LLaVA-CoT's training code. Masking is by prompt prefix
(docs/local-models.md): render the dialog with the model's own chat template,
and for each assistant turn find where its text starts and ends. This works with stock templates
(Llama-3.2-Vision's has no ``{% generation %}`` markers) and any processor, whatever it does to image
tokens, because the spans are measured from the *end* of the sequence: the text after an assistant
turn's start holds no image, so it tokenizes alone with the tokenizer, no image processing twice.
Everything else (system/user turns, headers, image tokens, padding) is -100.
"""
from __future__ import annotations

import torch

IGNORE = -100


def messages(turns: list[tuple[str, str]], upto: int | None = None, image: bool = True) -> list[dict]:
    """Chat messages for the first `upto` turns (all by default), the image (unless `image` is
    False: a text-only dialog) in the first user turn."""
    msgs = []
    for i, (user, assistant) in enumerate(turns[:upto]):
        content = ([{"type": "image"}] if i == 0 and image else []) + [{"type": "text", "text": user}]
        msgs += [{"role": "user", "content": content},
                 {"role": "assistant", "content": [{"type": "text", "text": assistant}]}]
    return msgs


def _render(processor, msgs, add_generation_prompt=False) -> str:
    return processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_char_spans(processor, turns, image: bool = True) -> tuple[str, list[tuple[int, int]]]:
    """(full text, [(start, end) of each assistant turn in characters]). The end includes the
    template's end-of-turn token(s), so the model learns to stop."""
    full = _render(processor, messages(turns, image=image))
    spans = []
    for k in range(len(turns)):
        prompt = _render(processor, messages(turns, k + 1, image)[:-1], add_generation_prompt=True)
        done = _render(processor, messages(turns, k + 1, image))
        if not (full.startswith(prompt) and full.startswith(done)):
            raise ValueError("the chat template does not render a dialog's prefix as a prefix of the "
                             "whole dialog; prompt-prefix masking cannot be used with it")
        spans.append((len(prompt), len(done)))
    return full, spans


class Collator:
    """Callable for a DataLoader: [(PIL image, turns) or None] -> batch dict with `labels`.

    None items (images that failed to decode) are dropped and counted in ``batch["skipped"]``; a batch
    with nothing left is returned as ``{"skipped": n}``; an item (None, turns) is a text-only dialog.
    `max_length` truncates from the right (the
    paper truncates nothing; this caps memory on outliers).
    """

    def __init__(self, processor, max_length: int | None = None):
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.max_length = max_length

    def _suffix_len(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def __call__(self, items) -> dict:
        good = [it for it in items if it is not None]
        skipped = len(items) - len(good)
        if not good:
            return {"skipped": skipped}
        texts, spans = zip(*(assistant_char_spans(self.processor, turns, im is not None) for im, turns in good))
        images = [[im] if im is not None else [] for im, _ in good]  # [] = a text-only dialog
        batch = self.processor(images=images if any(images) else None, text=list(texts), padding=True,
                               padding_side="right", add_special_tokens=False, return_tensors="pt")
        ids = batch["input_ids"]
        labels = torch.full_like(ids, IGNORE)
        for i, (text, turn_spans) in enumerate(zip(texts, spans)):
            n = int(batch["attention_mask"][i].sum())
            for start, end in turn_spans:
                a, b = n - self._suffix_len(text[start:]), n - self._suffix_len(text[end:])
                labels[i, a:b] = ids[i, a:b]
        batch["labels"] = labels
        if self.max_length and ids.shape[1] > self.max_length:  # every per-token tensor, e.g.
            for k, v in list(batch.items()):                        # Mllama's cross_attention_mask
                if k != "pixel_values" and torch.is_tensor(v) and v.shape[:2] == ids.shape:
                    batch[k] = v[:, :self.max_length]
        batch["skipped"] = skipped
        return dict(batch)
