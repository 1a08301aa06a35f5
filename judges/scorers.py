"""Answer scorers: is a predicted answer right?

Three rules, as benchmarks use them: normalized exact match (VQA style), the option letter for
multiple choice, and ChartQA's relaxed accuracy (a number within 5% of the reference, else exact
string match). `score` picks the rule from the reference and choices. Inputs are answers (for a
LLaVA-CoT response, the CONCLUSION body), not whole responses.
"""
from __future__ import annotations

import re
import string
from collections.abc import Sequence

RELATIVE_TOLERANCE = 0.05

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT = re.compile("[" + re.escape(string.punctuation.replace(".", "")) + "\u2018\u2019\u201c\u201d]")
_PREFIX = re.compile(r"\b(?:final answer|the answer is|answer)\b\s*(?:is\b)?\s*(?::|-(?=\s))?\s*", re.IGNORECASE)


def answer_part(text: str) -> str:
    """The text after the last "Final answer:" / "The answer is" / "Answer:", else the text."""
    text = (text or "").strip()
    last = None
    for m in _PREFIX.finditer(text):
        last = m
    if last is not None and text[last.end():].strip():
        text = text[last.end():]
    return text.strip()


def normalize(text: str) -> str:
    """Lower case, no punctuation (a decimal point survives), no articles, single spaces."""
    t = (text or "").lower().strip()
    t = _PUNCT.sub(" ", t)
    t = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", t)  # sentence periods go, "3.5" stays
    t = _ARTICLES.sub(" ", t)
    return " ".join(t.split())


def exact_match(pred: str, reference: str) -> bool:
    """Normalized exact match, also trying the part after an "answer is" phrase."""
    ref = normalize(reference)
    return bool(ref) and ref in {normalize(pred or ""), normalize(answer_part(pred or ""))}


# --- multiple choice ---------------------------------------------------------------------------------

_LETTER_ALONE = re.compile(r"^[\s(\[*\"']*([A-Z])[\s)\]*\"'.:]*$")
_ANY_LETTER_ALONE = re.compile(_LETTER_ALONE.pattern.replace("[A-Z]", "[A-Za-z]"))  # "b" alone names option B
_LETTER_LEAD = re.compile(r"^[\s(\[*\"']*([A-Z])(?:[)\]:.]|\s*[)\]])[\s*]")
_LETTER_PHRASE = re.compile(
    r"(?i:answer|option|choice)\s*(?i:is|would be|should be|:)?\s*(?i:option\s*)?[(\[*\"']*([A-Z])(?![A-Za-z])")
# "A" and "I" are also words: "the answer: I think ..." names no option.
_WORD_AFTER = re.compile(r"\s+[a-z]")


def _letters(choices: Sequence[str] | None) -> str:
    return string.ascii_uppercase[:len(choices)] if choices else string.ascii_uppercase


def extract_choice(answer: str | None, choices: Sequence[str] | None = None) -> str | None:
    """The option letter an answer names: "B", "b", "(B)", "B.", "B) cat", "B. cat", "The answer is B.",
    "Answer: (B)". With `choices`, an answer equal to an option's text maps to its letter, and letters
    beyond the options are rejected. None when no letter is named.
    """
    if not answer:
        return None
    valid = _letters(choices)
    text = answer.strip()
    for pattern in (_ANY_LETTER_ALONE, _LETTER_LEAD):
        m = pattern.match(text)
        if m and m.group(1).upper() in valid:
            return m.group(1).upper()
    hits = [m.group(1) for m in _LETTER_PHRASE.finditer(text)
            if m.group(1) in valid and not (m.group(1) in "AI" and _WORD_AFTER.match(text, m.end()))]
    if hits:
        return hits[-1]
    if choices:
        norm = normalize(answer_part(text))
        number = to_number(answer_part(text))  # "20.0" is the option "20"
        matches = [valid[i] for i, c in enumerate(choices)
                   if normalize(c) == norm or (number is not None and to_number(c) == number)]
        if len(matches) == 1:
            return matches[0]
    return None


def choice_match(pred: str, reference: str, choices: Sequence[str] | None = None) -> bool:
    """The same option letter on both sides (the reference may be a letter or an option's text)."""
    ref = extract_choice(reference, choices)
    return ref is not None and extract_choice(pred, choices) == ref


# --- ChartQA relaxed accuracy ------------------------------------------------------------------------

_NUMBER = re.compile(r"^[-+]?(?:\d+(?:,\d{3})*|\d*)(?:\.\d+)?$")


def to_number(text: str) -> float | None:
    """A number written alone: "12", "1,234.5", "$3.2", "45%", "-0.5." (% and currency dropped)."""
    t = (text or "").strip().rstrip(".").strip()
    t = t.lstrip("$\u20ac\u00a3").rstrip("%").strip()
    if not t or not _NUMBER.match(t) or not any(c.isdigit() for c in t):
        return None
    try:
        return float(t.replace(",", ""))
    except ValueError:
        return None


def relaxed_match(pred: str, reference: str, tolerance: float = RELATIVE_TOLERANCE) -> bool:
    """ChartQA relaxed accuracy: numbers within `tolerance` relative error of the reference;
    otherwise (or for a zero reference, as in the official metric) case-insensitive string match."""
    pred_text = answer_part(pred or "")
    p, r = to_number(pred_text), to_number(reference)
    if p is not None and r:
        return abs(p - r) / abs(r) <= tolerance
    return pred_text.strip().rstrip(".").lower() == (reference or "").strip().rstrip(".").lower()


def score(pred: str | None, reference: str | None, choices: Sequence[str] | None = None) -> bool:
    """Pick the rule: choices given or a letter reference -> option letter; a numeric reference ->
    relaxed accuracy; else normalized exact match."""
    if pred is None or reference is None:
        return False
    if choices or _LETTER_ALONE.match(reference.strip()):
        return choice_match(pred, reference, choices)
    if to_number(reference) is not None:
        return relaxed_match(pred, reference)
    return exact_match(pred, reference)
