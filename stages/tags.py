"""The four stage tags: tolerant parsing that says what it repaired, and canonical formatting.

Models drift from the exact `<SUMMARY>...</SUMMARY>` layout: lower case, `< summary >`, chatter around
the tags, a stage cut off before its closing tag (EOS, max tokens, or a stop string the provider did
not return), or a missing opening tag when the prompt prefilled it. The reference regex
(`<SUMMARY>(.*?)</SUMMARY>`) then finds nothing and its judge crashes or mis-indexes. Here each of
those is accepted and named in `repairs`, so a trace shows how clean the model's output was.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

STAGES: tuple[str, ...] = ("summary", "caption", "reasoning", "conclusion")

_TAG = re.compile(r"<\s*(/)?\s*(summary|caption|reasoning|conclusion)\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedStages:
    """`stages[name]` is the stripped body, "" for an empty tag pair, None when absent."""

    stages: dict[str, str | None]
    repairs: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """All four stages present with a non-empty body."""
        return all(self.stages.get(s) for s in STAGES)

    @property
    def missing(self) -> list[str]:
        return [s for s in STAGES if not self.stages.get(s)]


def _check_stage(stage: str) -> str:
    s = stage.lower()
    if s not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    return s


def parse_stages(text: str | None) -> ParsedStages:
    """Split a response into its stages, tolerating case, spacing, extra text and missing tags.

    A stage without a closing tag runs to the next stage tag or the end of the text; a closing tag
    without an opening one takes the text since the previous stage ended. The first occurrence of a
    stage wins.
    """
    stages: dict[str, str | None] = {s: None for s in STAGES}
    repairs: list[str] = []

    def note(msg: str) -> None:
        if msg not in repairs:
            repairs.append(msg)

    if not text:
        return ParsedStages(stages, repairs)

    current: tuple[str, int, bool] | None = None  # (stage, body start, is a repeat)
    last_end = 0  # where the previous stage (or the text) ended
    found_order: list[str] = []

    def record(stage: str, body: str, repeat: bool) -> None:
        if repeat:
            note(f"{stage}: repeated, kept the first")
            return
        stages[stage] = body.strip()
        found_order.append(stage)

    def gap(start: int, end: int) -> None:
        if text[start:end].strip():
            note("text before the stages" if not found_order and current is None else
                 "text between stages")

    for m in _TAG.finditer(text):
        closing, stage = bool(m.group(1)), m.group(2).lower()
        raw = m.group(0)
        canonical = f"</{stage.upper()}>" if closing else f"<{stage.upper()}>"
        if raw != canonical:
            if any(c.isspace() for c in raw):
                note(f"{stage}: spaces in tag")
            bare = re.sub(r"\s", "", raw)
            if bare != canonical and bare.upper() == canonical:
                note(f"{stage}: tag case")
        if not closing:
            if current is not None:
                open_stage, start, repeat = current
                note(f"{open_stage}: no closing tag")
                record(open_stage, text[start:m.start()], repeat)
            else:
                gap(last_end, m.start())
            current = (stage, m.end(), stage in found_order)
        else:
            if current is not None:
                open_stage, start, repeat = current
                if open_stage != stage:
                    note(f"{open_stage}: closed with </{stage.upper()}>")
                record(open_stage, text[start:m.start()], repeat)
                current = None
            elif stage in found_order:
                note(f"{stage}: stray closing tag")
            else:
                note(f"{stage}: no opening tag")
                record(stage, text[last_end:m.start()], False)
            last_end = m.end()

    if current is not None:
        open_stage, start, repeat = current
        note(f"{open_stage}: no closing tag")
        record(open_stage, text[start:], repeat)
    elif found_order:
        if text[last_end:].strip():
            note("text after the stages")

    ranks = [STAGES.index(s) for s in found_order]
    if ranks != sorted(ranks):
        note("stages out of order")
    return ParsedStages(stages, repairs)


def extract_stage(text: str | None, stage: str) -> str | None:
    """The body of one stage (stripped), or None when the text does not have it."""
    return parse_stages(text).stages[_check_stage(stage)]


def before_other_tags(text: str, stage: str) -> str:
    """One stage's reply up to the first tag of another stage (or just past its own closing tag): a
    reply that runs on into another stage ("The bar is 7. <REASONING>guess: 3") must not carry that
    stage's tags into its body, where every later parse would read them as that stage."""
    stage = _check_stage(stage)
    for m in _TAG.finditer(text):
        if m.group(2).lower() != stage:
            return text[:m.start()]
        if m.group(1):
            return text[:m.end()]
    return text


def without_tags(text: str) -> str:
    """The text with every stage tag taken out."""
    return _TAG.sub(" ", text).strip()


def has_stage(text: str | None, stage: str) -> bool:
    """True when `stage` is present with a non-empty body; the default `valid` test for selection."""
    return bool(extract_stage(text, stage))


def format_stage(stage: str, body: str) -> str:
    """`<SUMMARY>body</SUMMARY>`: the canonical form used in prompts and final responses."""
    tag = _check_stage(stage).upper()
    return f"<{tag}>{body}</{tag}>"


def format_stages(stages: Mapping[str, str | None], sep: str = "\n\n") -> str:
    """The given stages in canonical order and form, skipping absent ones (for `{previous}`)."""
    return sep.join(format_stage(s, stages[s]) for s in STAGES if stages.get(s) is not None)


def answer_from_conclusion(text: str | None) -> str | None:
    """The answer to score: the CONCLUSION body (as the reference's evaluation keeps only it).

    Untagged text is taken whole (a plain answer); tagged text without a CONCLUSION has no answer
    and gives None.
    """
    if not text:
        return None
    parsed = parse_stages(text)
    if parsed.stages["conclusion"] is not None:
        return parsed.stages["conclusion"]
    if any(v is not None for v in parsed.stages.values()):
        return None
    return text.strip()
