"""Reading a judge's answer: which response won, and did the reasoning pre-check flag an error.

Two rules for each. The `*_faithful` ones are the reference's substring tests, kept bit for bit
for `--faithful` runs: "I choose response 1" anywhere means response 1, everything else (garbage,
"Response 1", "response [1]", a refusal, truncation) means response 2; a pre-check output that
contains "incorrect" anywhere (even "not incorrect"), case-sensitively, is a fail. The robust ones
read what the judge meant and return None when they cannot tell, so the caller can retry and then
break the tie at random instead of silently favouring the second candidate. `decide_first` and
`decide_both` (the pair asked in both orders) also read logprobs where the judge returned them
(judges/logprobs.py), which survive a judge that always writes the same number.
"""
from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from judges.logprobs import TokenLogprobs, verdict_probability

# Stripped from decoded output by the reference before parsing.
SPECIAL_TOKENS = ("<|eot_id|>", "<|endoftext|>")
FAITHFUL_PHRASE = "I choose response 1"


def strip_special(text: str | None) -> str:
    text = text or ""
    for tok in SPECIAL_TOKENS:
        text = text.replace(tok, "")
    return text


# --- pairwise verdict -----------------------------------------------------------------------------


def parse_verdict_faithful(text: str | None) -> int:
    """The reference rule: 0 (response 1) iff the exact substring "I choose response 1" occurs,
    else 1 (response 2)."""
    return 0 if FAITHFUL_PHRASE in strip_special(text) else 1


def faithful_rule_fired(text: str | None) -> bool:
    """True when the reference rule decided by default: neither "I choose response 1" nor
    "I choose response 2" occurs. Used to record parse "fallback" in faithful runs."""
    t = strip_special(text)
    return FAITHFUL_PHRASE not in t and "I choose response 2" not in t


def _normalize(text: str) -> str:
    t = strip_special(text).lower()
    t = re.sub(r"[*_`]+", "", t)  # markdown emphasis
    return re.sub(r"\s+", " ", t).strip()


_NUM = r"(?:[\[\(#]\s*)?(1|2|one|two)(?:\s*[\]\)])?(?![\d/])"
_DIGIT = r"(?:[\[\(#]\s*)?([12])(?:\s*[\]\)])?(?![\d/])"
_NOUN = r"(?:response|repsonse|text|answer|option|candidate)"
# "would not choose", "do not really pick", "cannot simply select": only such words sit between the
# negation and the verb ("response 2 is not accurate I choose response 1" negates no choice).
_NEG = re.compile(r"(?:\bnot|n't|\bnever|\bcannot)\s+"
                  r"(?:(?:really|simply|just|necessarily|definitely|even|ever|to|be|able|going|want)\s+){0,2}$")
# Explicit choice: "I choose response 2", "choose response [1]", "I'd pick text two", "select #1".
_CHOICE = re.compile(
    r"\b(?:choose|chose|choosing|select|selected|pick|picked|prefer|preferred)\s+(?:the\s+)?"
    r"(?:" + _NOUN + r"\s*" + _NUM + "|" + _DIGIT + ")")
# Comparative statement: "response 1 is better", "Response 2 is the better one".
_BETTER = re.compile(
    r"\b" + _NOUN + r"\s*" + _NUM +
    r"\s+(?:is|was|seems|appears)\s+((?:\w+\s+){0,2})(?:better|superior|stronger|preferred|preferable|more\s+"
    r"(?:accurate|detailed|complete|thorough|correct|precise|comprehensive|relevant|informative|logical))")
_BARE = re.compile(r"^(?:" + _NOUN + r")?\s*" + _NUM + r"\s*\.?$")


def _winner(digit: str) -> int:
    return 0 if digit in ("1", "one") else 1


def parse_verdict(text: str | None) -> int | None:
    """The winner (0 = response 1, 1 = response 2), or None when the text makes no clear choice.

    The last explicit choice counts ("I would not choose response 1; I choose response 2" -> 1);
    negated choices and the echoed template "[1/2]" are ignored; a bare "1"/"2" is accepted; failing
    an explicit choice, a single consistent "response N is better" counts.
    """
    t = _normalize(text or "")
    if not t:
        return None
    choices = [m for m in _CHOICE.finditer(t) if not _NEG.search(t[:m.start()])]
    if choices:
        last = choices[-1]
        return _winner(last.group(1) or last.group(2))
    better = {_winner(m.group(1)) for m in _BETTER.finditer(t)
              if not re.search(r"\bnot\b|n't", m.group(2))}
    if len(better) == 1:
        return better.pop()
    m = _BARE.match(t)
    return _winner(m.group(1)) if m else None


_REASON = re.compile(r"since\s+(.*?)[,;]?\s*i\s+(?:would\s+)?cho(?:o)?se\b", re.IGNORECASE | re.DOTALL)


def extract_reason(text: str | None, limit: int = 300) -> str | None:
    """The judge's stated reason ("Since [reason], I choose ..."), else its text, cut to `limit`."""
    t = strip_special(text).strip()
    if not t:
        return None
    m = _REASON.search(t)
    reason = (m.group(1) if m else t).strip()
    return reason[:limit] if reason else None


# --- reasoning pre-check --------------------------------------------------------------------------


def check_failed_faithful(text: str | None) -> bool:
    """The reference rule: the check fails iff the output contains "incorrect" (case-sensitive
    substring, so "not incorrect" fails and "Incorrect" passes)."""
    return "incorrect" in strip_special(text)


_FAIL_WORDS = r"(?:incorrect|wrong|inaccurate|erroneous|flawed|invalid)"
_PASS_WORDS = r"(?:correct|accurate|valid|sound)"
_LEAD = re.compile(r"^(?:output|answer|verdict|result)?\s*:?\s*[\"'(\[]?\s*(not\s+)?(" + _FAIL_WORDS + "|" +
                   _PASS_WORDS + r")\b")
_STATEMENT = re.compile(
    r"\b(?:reasoning|process|it|calculations?|steps?|logic|answer)\s+(?:is|are|was|seems|appears)\s+"
    r"(?:(?!not\b)\w+\s+){0,2}?(not\s+(?:\w+\s+){0,2}?)?(" + _FAIL_WORDS + "|" + _PASS_WORDS + r")\b")
_ANY_FAIL = re.compile(r"\b" + _FAIL_WORDS + r"\b|\berrors?\s+(?:in|found)|\bmistakes?\b")
_ANY_PASS = re.compile(r"(?<!in)\bcorrect\b|\bno\s+errors?\b")


def _fails(negated: str | None, word: str) -> bool:
    failed = re.fullmatch(_FAIL_WORDS, word) is not None
    return failed != bool(negated)


def check_failed(text: str | None) -> bool | None:
    """True when the pre-check found an error, False when it passed, None when it cannot be told.

    Reads a leading verdict word first ("Incorrect.", "correct"), then a statement about the
    reasoning ("the reasoning is not correct"), then unambiguous vocabulary; negation flips a word.
    """
    t = _normalize(text or "")
    if not t:
        return None
    m = _LEAD.match(t)
    if m:
        return _fails(m.group(1), m.group(2))
    stated = {_fails(m.group(1), m.group(2)) for m in _STATEMENT.finditer(t)}
    if len(stated) == 1:
        return stated.pop()
    if stated:
        return None
    fail, ok = bool(_ANY_FAIL.search(t)), bool(_ANY_PASS.search(t))
    if fail != ok:
        return fail
    return None


# --- one decision from a judge that may need a retry ----------------------------------------------


@dataclass(frozen=True)
class Decision:
    """A pairwise decision: `winner` 0/1 within the pair; `parse` "ok" or "fallback" (for the
    `judge.verdict` trace); `outputs` every raw judge output read, in order."""

    winner: int
    parse: str
    reason: str | None
    outputs: list[str] = field(default_factory=list)
    readings: tuple["Reading", ...] = ()  # each order's answer, as asked (the first order first)
    agreed: bool | None = None  # both orders asked and read: did they name the same winner?


async def decide(ask: Callable[[], Awaitable[str]], rng: random.Random, *, faithful: bool = False,
                 retries: int = 1) -> Decision:
    """Ask the judge and turn its answer into a winner.

    Faithful: one call, the reference rule; parse is "fallback" when neither "I choose response 1"
    nor "... 2" occurs (the rule's default picked response 2). Default: robust parse; an unparseable
    answer is asked again up to `retries` times, then the tie is broken with `rng` and parse is
    "fallback". `rng` must be this decision's own (see judges/streams.py): shared with concurrent
    decisions, the tie-breaks would depend on which reply came first.
    """
    outputs = [await ask()]
    if faithful:
        text = outputs[0]
        return Decision(parse_verdict_faithful(text), "fallback" if faithful_rule_fired(text) else "ok",
                        extract_reason(text), outputs)
    for attempt in range(retries + 1):
        if attempt:
            outputs.append(await ask())
        winner = parse_verdict(outputs[-1])
        if winner is not None:
            return Decision(winner, "ok", extract_reason(outputs[-1]), outputs)
    return Decision(rng.randrange(2), "fallback", extract_reason(outputs[-1]), outputs)


# --- a verdict in one or both orders, read from the text or from logprobs -------------------------

Answer = tuple[str, "TokenLogprobs | None"]  # a judge's reply: its text and, where available, logprobs


@dataclass(frozen=True)
class Reading:
    """One order's answer: `winner` 0/1 as the pair was shown (None: unreadable), `p_first` P(the
    response shown first wins) from logprobs (None: none), `by` "logprob", "text" or "none"."""

    outputs: list[str]
    winner: int | None
    p_first: float | None
    by: str


async def read_order(ask: Callable[[], Awaitable[Answer]], *, retries: int = 1,
                     use_logprobs: bool = True) -> Reading:
    """Ask once (again up to `retries` times while unreadable): the logprob verdict where there is one
    with a margin, else the robust text rule."""
    outputs: list[str] = []
    p: float | None = None
    for _ in range(retries + 1):
        text, logprobs = await ask()
        outputs.append(text)
        p = verdict_probability(logprobs) if use_logprobs else None
        if p is not None and p != 0.5:
            return Reading(outputs, 0 if p > 0.5 else 1, p, "logprob")
        winner = parse_verdict(text)
        if winner is not None:
            return Reading(outputs, winner, p, "text")
    return Reading(outputs, None, p, "none")


async def decide_first(ask: Callable[[], Awaitable[Answer]], rng: random.Random, *, retries: int = 1,
                       use_logprobs: bool = True) -> Decision:
    """The pair asked in its given order only: parse "logprob" when the probabilities decided, "ok"
    when the text did, "fallback" (a draw from this decision's `rng`) when neither could."""
    r = await read_order(ask, retries=retries, use_logprobs=use_logprobs)
    if r.winner is None:
        return Decision(rng.randrange(2), "fallback", extract_reason(r.outputs[-1]), r.outputs, (r,))
    return Decision(r.winner, "logprob" if r.by == "logprob" else "ok", extract_reason(r.outputs[-1]),
                    r.outputs, (r,))


async def decide_both(ask_ab: Callable[[], Awaitable[Answer]], ask_ba: Callable[[], Awaitable[Answer]],
                      rng: random.Random, *, retries: int = 1, use_logprobs: bool = True) -> Decision:
    """The pair asked in both orders at once, so a judge's taste for a position cancels out.

    Agreement decides (parse "ok"). Disagreement, or an unreadable order, is a tie: broken by the
    logprob margin P(A wins) = ½ [p(A first) + (1 − p(B first))] over the orders that have one (parse
    "logprob"), else by this decision's `rng` (parse "tie"; "fallback" when neither order was readable).
    Winners are 0 = A (shown first in `ask_ab`), 1 = B.
    """
    ab, ba = await asyncio.gather(read_order(ask_ab, retries=retries, use_logprobs=use_logprobs),
                                  read_order(ask_ba, retries=retries, use_logprobs=use_logprobs))
    v1 = ab.winner
    v2 = None if ba.winner is None else 1 - ba.winner
    agreed = None if v1 is None or v2 is None else v1 == v2
    p_a = [p for p in (ab.p_first, None if ba.p_first is None else 1 - ba.p_first) if p is not None]
    margin = sum(p_a) / len(p_a) if p_a else 0.5
    if agreed:
        winner, parse = v1, "ok"
    elif margin != 0.5:
        winner, parse = (0 if margin > 0.5 else 1), "logprob"
    else:
        winner, parse = rng.randrange(2), ("fallback" if v1 is None and v2 is None else "tie")
    by_winner = ab if v1 == winner else ba if v2 == winner else ab
    return Decision(winner, parse, extract_reason(by_winner.outputs[-1]), ab.outputs + ba.outputs, (ab, ba),
                    agreed)
