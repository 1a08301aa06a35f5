"""The rows of one `hf:` batch: a request prepared once (its prompt) and its n samples, each drawn
with its own seeded generator and ended at its own stop string or budget, whatever else is in the
batch."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from engine.backends.token_healing import Healing, restrict, strip_healed
from engine.types import Completion, Request


@dataclass
class Prompt:
    """One request, prepared once and shared by its n rows."""

    text: str
    ids: Any                       # 1-D LongTensor, the image placeholders already expanded
    images: list[Any] = field(default_factory=list)       # PIL images, in order
    keys: list[str] = field(default_factory=list)         # their cache keys
    extra: dict[str, Any] = field(default_factory=dict)   # other processor outputs (pixels, masks)
    healed: str = ""                 # text given back by token healing (token_healing.py)


@dataclass
class Row:
    prompt: Prompt
    request: Request
    sample: int


class RowSampler:
    """A logits processor: each sampled row draws its token with its own generator (seeded seed +
    sample index) and hands generate a one-hot row, so greedy search returns it; temperature-0 rows
    pass through (greedy). Rows therefore never share random state, whatever the batch. A row whose
    request asks for logprobs gets, per step, the top alternatives of the model's own distribution
    (before temperature and top-p), as OpenAI-compatible servers return them. A row whose prompt
    gave text back (token healing) first draws only tokens that spell that text again."""

    def __init__(self, torch, rows: list[Row], healing: Healing | None = None):
        self.torch = torch
        self.healing = healing
        self.left = [r.prompt.healed for r in rows]  # given-back text still to be spelled, per row
        self.steps = 0
        self.rows = [(r.request.temperature, r.request.top_p) for r in rows]
        self.top_k = [r.request.logprobs for r in rows]
        self.top: list[list[tuple[list[int], list[float]]]] = [[] for _ in rows]  # per row, per step
        self.gens = []
        for r in rows:
            seed = r.request.seed + r.sample if r.request.seed is not None else random.SystemRandom().getrandbits(63)
            self.gens.append(torch.Generator().manual_seed(seed % (2 ** 63)))

    def __call__(self, input_ids, scores):
        torch = self.torch
        if self.healing and any(self.left):
            scores = scores.clone()
            for i, left in enumerate(self.left):
                if left and self.steps:
                    left = self.left[i] = self.healing.after(left, int(input_ids[i, -1]))
                if left:
                    restrict(scores, i, self.healing.allowed(left))
        self.steps += 1
        out = scores.clone()
        for i, k in enumerate(self.top_k):
            if k:
                values, ids = torch.log_softmax(scores[i].float(), dim=-1).topk(k)
                self.top[i].append((ids.tolist(), values.tolist()))
        for i, (temperature, top_p) in enumerate(self.rows):
            if temperature <= 0:
                continue
            probs = torch.softmax(scores[i].float() / temperature, dim=-1)
            if top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                keep = (sorted_p.cumsum(-1) - sorted_p) < top_p  # smallest set reaching top_p
                probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
            token = torch.multinomial(probs.cpu(), 1, generator=self.gens[i]).item()
            out[i] = float("-inf")
            out[i, token] = 0.0
        return out


class RowStop:
    """A stopping criterion with per-row budgets and stop strings; remembers where each row ended."""

    def __init__(self, rows: list[Row], start: int, tokenizer, eos: set[int]):
        self.start, self.tokenizer, self.eos = start, tokenizer, eos
        self.max_new = [r.request.max_tokens for r in rows]
        self.stops = [tuple(s for s in r.request.stop if s) for r in rows]
        self.window = [max((len(s) for s in st), default=0) + 4 for st in self.stops]
        self.ended: list[tuple[int, str] | None] = [None] * len(rows)  # (tokens, finish reason)
        self.healed = [r.prompt.healed for r in rows]

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        made = input_ids.shape[1] - self.start
        for i in range(input_ids.shape[0]):
            if self.ended[i] is not None:
                continue
            last = int(input_ids[i, -1])
            if last in self.eos or (self.stops[i] and any(s in self._tail(input_ids[i], i, made)
                                                          for s in self.stops[i])):
                self.ended[i] = (made, "stop")
            elif made >= self.max_new[i]:
                self.ended[i] = (made, "length")
        return torch.tensor([e is not None for e in self.ended], device=input_ids.device)

    def _tail(self, row, i: int, made: int) -> str:
        """The last few tokens as text: a stop string ends in the newest token, and every token
        spells at least one character, so its length (+ a margin) in tokens is enough."""
        healed = self.healed[i]
        if healed and made <= len(healed) + self.window[i]:  # the given-back text (spelled by at most
            # len(healed) tokens) may still be in the window: it is not new, so look for stops after it
            return strip_healed(self.tokenizer.decode(row[-made:], skip_special_tokens=True), healed)
        return self.tokenizer.decode(row[-min(made, self.window[i]):], skip_special_tokens=True)

    def completion(self, i: int, tokens: list[int], prompt_tokens: int,
                   top: list[tuple[list[int], list[float]]] | None = None) -> Completion:
        """Row i's completion; `top` (RowSampler.top[i]) adds each token's alternatives' logprobs."""
        made, reason = self.ended[i] or (min(len(tokens), self.max_new[i]), "length")
        tokens = tokens[:made]
        logprobs = None
        if top:
            decode = lambda t: self.tokenizer.decode([t], skip_special_tokens=False)  # noqa: E731
            logprobs = []
            for token, (ids, values) in zip(tokens, top):
                alternatives: dict[str, float] = {}
                for t, v in zip(ids, values):
                    text = decode(t)
                    alternatives[text] = max(alternatives.get(text, float("-inf")), v)
                logprobs.append((decode(token), alternatives))
        text = strip_healed(self.tokenizer.decode([t for t in tokens if t not in self.eos], skip_special_tokens=True),
                            self.healed[i])
        cut = [text.find(s) for s in self.stops[i] if s in text]
        if cut:
            text, reason = text[:min(cut)], "stop"
        return Completion(text=text, finish_reason=reason, prompt_tokens=prompt_tokens, completion_tokens=made,
                          logprobs=logprobs)
