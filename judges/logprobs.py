"""Reading a judge's preference from its token logprobs instead of from the token it happened to write.

A sampled verdict is one draw: a judge that leans 55/45 towards response 1 still writes "2" almost half
the time, and a judge with a position bias may write "2" every time while its probabilities still rank
the candidates. Where the backend returns the top alternatives of each token, the verdict is the
probability mass on "1" against "2" at the verdict position (the token after "I choose response "),
and the pre-check's the mass on "correct" against "incorrect" at its first token. Both return None
when the position is not found or neither word is among the alternatives: the text rule then decides.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence

TokenLogprobs = Sequence[tuple[str, dict[str, float]]]
VERDICT_CUE = "chooseresponse"  # "I choose response " with the spaces (tokenized any way) removed
_DIGIT = re.compile(r"^[\[\(#]?\s*([12])\s*[\]\)]?[.,]?$")


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def verdict_probability(logprobs: TokenLogprobs | None) -> float | None:
    """P(response 1) / (P(response 1) + P(response 2)) at the last verdict position, or None."""
    if not logprobs:
        return None
    said = ""
    found: float | None = None
    for i, (token, alternatives) in enumerate(logprobs):
        echo = i + 1 < len(logprobs) and logprobs[i + 1][0].lstrip().startswith("/")  # the template's "[1/2]"
        if (said.endswith(VERDICT_CUE) or said.endswith(VERDICT_CUE + "[")) and not echo:
            mass = {"1": 0.0, "2": 0.0}
            for alt, lp in alternatives.items():
                m = _DIGIT.match(alt.strip())
                if m:
                    mass[m.group(1)] += math.exp(lp)
            if mass["1"] + mass["2"] > 0:
                found = mass["1"] / (mass["1"] + mass["2"])
        said = _squash(said + token)
    return found


def check_failure_probability(logprobs: TokenLogprobs | None) -> float | None:
    """P("incorrect") / (P("incorrect") + P("correct")) at the reply's first word, or None.

    A word may be split into pieces ("in" + "correct"): an alternative counts for the word it can only
    begin ("inc" → incorrect, "cor" → correct), three letters at least ("I", "in" begin other words).
    Where such a short piece carries enough mass to change the answer (a judge writing "In|correct"),
    the probabilities cannot say and the text decides."""
    for token, alternatives in logprobs or ():
        if not token.strip():
            continue  # leading whitespace tokens
        fail = ok = unsure = 0.0
        for alt, lp in alternatives.items():
            piece = alt.strip().lower().strip("\"'*.:")
            if len(piece) < 3:
                unsure += math.exp(lp) if piece and "incorrect".startswith(piece) else 0.0
            elif "incorrect".startswith(piece) and not "correct".startswith(piece):
                fail += math.exp(lp)
            elif "correct".startswith(piece):
                ok += math.exp(lp)
        return fail / (fail + ok) if fail + ok > 0 and unsure < abs(fail - ok) else None
    return None
