"""The pairwise judge's request, laid out as the reference lays it out.

The reference concatenates: rubric, "\\n\\nQuestion: ", an optional "\\n\\nHint about the Question: ",
"\\nRepsonse 1: ", "\\nRepsonse 2: ", "\\n\\n" + a restated rubric, the format line; the image comes
first in the user turn. That order already puts everything shared by a stage's comparisons (image,
rubric, question, hint) before the candidates, so a prefix cache covers it. All text comes from
prompt files; only the joins live here. The reasoning pre-check is text only, as in the reference.
"""
from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from engine.messages import user_message
from stages.prompts import load_prompt
from stages.sentences import sentence_view_faithful, split_sentences
from stages.tags import STAGES, answer_from_conclusion, parse_stages

JUDGE_KINDS: tuple[str, ...] = ("summary", "caption", "reasoning", "conclusion", "sentence", "answer")
_ALIASES = {"all": "answer"}  # the reference's name for the whole-answer judge
HINT_PROMPT = "judge_hint"
CHECK_PROMPT = "check_reasoning"

PathLike = str | os.PathLike[str] | None


def judge_kind(kind: str) -> str:
    """Canonical judge kind ("all" -> "answer"); ValueError for an unknown one."""
    k = _ALIASES.get(kind.lower(), kind.lower())
    if k not in JUDGE_KINDS:
        raise ValueError(f"unknown judge kind {kind!r}; expected one of {', '.join(JUDGE_KINDS)}")
    return k


def judge_prompt_name(kind: str) -> str:
    return f"judge_{judge_kind(kind)}"


def prompt_fingerprints(kind: str, prompts_dir: PathLike = None) -> dict[str, str]:
    """Fingerprints of every prompt file a `kind` comparison reads (for cache keys and traces)."""
    names = [judge_prompt_name(kind), HINT_PROMPT]
    if judge_kind(kind) == "reasoning":
        names.append(CHECK_PROMPT)
    return {n: load_prompt(n, prompts_dir).fingerprint for n in names}


def render_judge(kind: str, question: str, response1: str, response2: str, *, hint: str | None = None,
                 prompts_dir: PathLike = None) -> str:
    """The judge's text. The hint block is present only for a non-empty hint (the reference's
    `if hint:`) and only in rubrics that have `{hint_block}` (reasoning, conclusion, sentence)."""
    hint_block = ""
    if hint:
        hint_block = "\n\n" + load_prompt(HINT_PROMPT, prompts_dir).render(hint=hint)
    return load_prompt(judge_prompt_name(kind), prompts_dir).render(
        question=question, hint_block=hint_block, response1=response1, response2=response2)


def judge_messages(kind: str, question: str, response1: str, response2: str, *, hint: str | None = None,
                   image_url: str | None = None, prompts_dir: PathLike = None) -> list[dict]:
    """Chat messages for one pairwise comparison: one user turn, the image part first (as the
    reference puts `<|image|>` first), omitted when there is no image. The turn's shape is the
    engine's (`engine.messages.user_message`), the same as generation requests."""
    return [user_message(render_judge(kind, question, response1, response2, hint=hint,
                                      prompts_dir=prompts_dir), image_url)]


def render_check(caption: str, reasoning: str, *, prompts_dir: PathLike = None) -> str:
    """The reasoning correctness pre-check for one candidate, given the caption as "Given
    Information". (The reference formats a missing caption as "None"; pass str(None) to match.)"""
    return load_prompt(CHECK_PROMPT, prompts_dir).render(caption=caption, reasoning=reasoning)


def check_messages(caption: str, reasoning: str, *, prompts_dir: PathLike = None) -> list[dict]:
    """Pre-check messages: text only, as in the reference."""
    return [user_message(render_check(caption, reasoning, prompts_dir=prompts_dir))]


# --- what the judge is shown -------------------------------------------------------------------------


class NotJudgeable(ValueError):
    """A candidate lacks what its judge needs (the reference drops it and then mis-indexes or
    crashes). `candidate` is its position in the pair."""

    def __init__(self, kind: str, candidate: int, why: str):
        super().__init__(f"{kind} judge: candidate {candidate + 1} {why}")
        self.kind, self.candidate = kind, candidate


@dataclass(frozen=True)
class JudgeInputs:
    responses: tuple[str, str]
    hint: str | None


def stage_hint(kind: str, stages: Mapping[str, str | None], *, faithful: bool = False) -> str | None:
    """The reference's hint: reasoning -> the caption; conclusion -> caption + reasoning (joined with
    nothing in faithful mode, as the reference does, else with a blank line); others -> None."""
    kind = judge_kind(kind)
    caption, reasoning = stages.get("caption"), stages.get("reasoning")
    if kind == "reasoning":
        return caption
    if kind == "conclusion" and caption is not None and reasoning is not None:
        return caption + ("" if faithful else "\n\n") + reasoning
    return None


# The reference's stage judges require these closed tag pairs in each candidate's full text.
_FAITHFUL_NEEDS = {
    "summary": ("summary",),
    "caption": ("caption", "summary"),
    "reasoning": ("reasoning", "summary", "caption"),
    "conclusion": ("conclusion", "summary", "caption", "reasoning"),
}


def _faithful_stages(text: str) -> dict[str, str]:
    found = {}
    for s in STAGES:
        tag = s.upper()
        m = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
        if m:
            found[s] = m.group(1)
    return found


def judge_inputs(kind: str, outputs: Sequence[str], *, faithful: bool = False) -> JudgeInputs:
    """Responses and hint for one comparison, from the two candidates' full texts (each holding all
    stages so far, as in continue-the-prefix mode).

    Faithful: the reference's exact extraction (case-sensitive regex, bodies unstripped, hint from
    the last candidate that has it). Default: tolerant tag parsing, stripped bodies. Raises
    NotJudgeable for a candidate missing what its judge needs; check `judgeable` first.
    """
    kind = judge_kind(kind)
    if len(outputs) != 2:
        raise ValueError(f"a pairwise judge takes 2 outputs, got {len(outputs)}")
    responses: list[str] = []
    hint: str | None = None
    for i, text in enumerate(outputs):
        if text is None:
            raise NotJudgeable(kind, i, "is missing")
        if kind == "answer":
            if not faithful and answer_from_conclusion(text) is None:  # tagged, but cut off before its answer
                raise NotJudgeable(kind, i, "has stage tags but no CONCLUSION")
            responses.append(text if faithful else text.strip())
        elif kind == "sentence":
            if faithful:
                try:
                    sentence, h = sentence_view_faithful(text)
                except IndexError:
                    raise NotJudgeable(kind, i, "has no period") from None
            else:
                sentences = split_sentences(text)
                if not sentences:
                    raise NotJudgeable(kind, i, "is empty")
                sentence, h = sentences[-1], " ".join(sentences[:-1]) or None
            responses.append(sentence)
            if h is not None and (faithful or hint is None):
                hint = h
        else:
            if faithful:
                stages = _faithful_stages(text)
                lacking = [s for s in _FAITHFUL_NEEDS[kind] if s not in stages]
                if lacking:
                    raise NotJudgeable(kind, i, "lacks closed " + ", ".join(s.upper() for s in lacking))
            else:
                stages = parse_stages(text).stages
                if not stages.get(kind):
                    raise NotJudgeable(kind, i, f"lacks {kind.upper()}")
            responses.append(stages[kind])
            h = stage_hint(kind, stages, faithful=faithful)
            if h is not None and (faithful or hint is None):
                hint = h
    return JudgeInputs((responses[0], responses[1]), hint)


def judgeable(kind: str, text: str | None, *, faithful: bool = False) -> bool:
    """True when `text` has what a `kind` judge needs; use as selection's `valid` predicate."""
    try:
        judge_inputs(kind, [text, text], faithful=faithful)  # type: ignore[list-item]
    except NotJudgeable:
        return False
    return True


# --- the reasoning comparison: pre-checks, then the judge ------------------------------------------


async def precheck_then_judge(check: Callable[[int], Awaitable[bool]], judge: Callable[[], Awaitable[int]],
                              *, parallel: bool = False, symmetric: bool = False) -> int:
    """The reference's reasoning comparison: if candidate 1's check fails, candidate 2 wins
    (candidate 2 is never checked); else if candidate 2's check fails, candidate 1 wins; else the
    pairwise judge decides. Returns 0/1 within the pair.

    `check(i)` returns True when candidate i's reasoning was found wrong. `parallel=True` runs both
    checks at once: the same winner, one call sooner, one extra call when candidate 1 fails.
    `symmetric=True` (stagewise's rule; --faithful keeps the reference's) checks both at once and
    lets the check decide only when exactly one fails; when both fail or both pass the judge decides.
    Under the reference's rule a check that fails everything hands every pair to the candidate shown
    second, a position bias no judge can undo.
    """
    if symmetric:
        first, second = await asyncio.gather(check(0), check(1))
        if first != second:
            return 1 if first else 0
        return await judge()
    if parallel:
        first, second = await asyncio.gather(check(0), check(1))
    else:
        first = await check(0)
        second = False if first else await check(1)
    if first:
        return 1
    if second:
        return 0
    return await judge()
