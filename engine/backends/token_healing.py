"""Token healing for a continued assistant message (sentence_beam's prefixes, `continue_final`).

A prefix cut at a sentence end rarely ends where the model's own tokens end: a tokenizer that merges
across words writes "… to right. </SUMMARY>" with one token for " from left to right. ", so the prefix
"… to right." ends in tokens the model never saw in that place, and it derails. So the prompt gives
back the text of its last few tokens, and the first new tokens must spell that text again (each one a
piece of it, or one that starts with all that is left): the model picks its own tokens across the cut,
and the completion drops the given-back text.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

GIVE_BACK = 3  # tokens given back; enough to reach the start of a token that spans the cut
REMEMBERED = 4096  # texts whose allowed tokens are kept (most recently used): a long job's prefixes all differ


class Healing:
    """The tokenizer's token texts, decoded once, and which tokens may spell what is left to heal."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self._texts: list[str] | None = None
        self._allowed: OrderedDict[str, list[int]] = OrderedDict()

    @property
    def texts(self) -> list[str]:
        if self._texts is None:
            self._texts = [self.tokenizer.decode([i]) for i in range(len(self.tokenizer))]
        return self._texts

    def split(self, text: str, give_back: int = GIVE_BACK) -> tuple[str, str]:
        """(text less the text of its last `give_back` tokens, that text). Only ordinary tokens that
        spell the end of `text` exactly are given back; ("text", "") when none is."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        for k in range(min(give_back, len(ids) - 1), 0, -1):
            if any(i in self.special for i in ids[-k:]):
                continue
            tail = self.tokenizer.decode(ids[-k:])
            if tail and text.endswith(tail):
                return text[:-len(tail)], tail
        return text, ""

    def allowed(self, left: str) -> list[int]:
        """Ids of the tokens that may come next while `left` is still to be spelled."""
        if left in self._allowed:
            self._allowed.move_to_end(left)
            return self._allowed[left]
        ids = [i for i, t in enumerate(self.texts) if t and i not in self.special
               and (t.startswith(left) or left.startswith(t))]
        self._allowed[left] = ids
        if len(self._allowed) > REMEMBERED:
            self._allowed.popitem(last=False)
        return ids

    def after(self, left: str, token: int) -> str:
        """What is still to be spelled once `token` came."""
        t = self.texts[token] if token < len(self.texts) else ""
        return left[len(t):] if t and left.startswith(t) else ""


def strip_healed(text: str, healed: str) -> str:
    """A completion's text without the given-back text it starts with."""
    return text[len(healed):] if healed and text.startswith(healed) else text


def restrict(scores: Any, row: int, ids: list[int]) -> None:
    """Keep only `ids` for `row` of `scores` (in place; the others at -inf)."""
    keep = scores[row, ids].clone()
    scores[row] = float("-inf")
    scores[row, ids] = keep
