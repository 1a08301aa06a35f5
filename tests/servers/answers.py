"""What every scripted server answers, whatever wire format carries it (OpenAI, Anthropic, Gemini).

Candidates carry a quality `q=N` in every stage, the judge prefers the higher q, and directives in the
request's text (`[[name]]`, `[[namexK]]`, `[[name:VALUE]]`) script faults and answers. The servers only
translate their wire format to (last user text, assistant prefix, stop strings) and back.
"""
from __future__ import annotations

import re

DIRECTIVE = re.compile(r"\[\[([a-z0-9_\-]+?)(?:x(\d+)|:([^\]]+))?\]\]")
STAGES = ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION")


def directives_in(text: str) -> dict[str, tuple[str | None, str | None]]:
    """{name: (count, value)} for every `[[...]]` directive in `text`."""
    return {m.group(1): (m.group(2), m.group(3)) for m in DIRECTIVE.finditer(text)}


def quality(seed: int, sample: int, n: int, stage: str = "") -> int:
    """Candidates of one request get distinct qualities 0..n-1; which index is best varies by stage."""
    return (sample + seed + len(stage)) % max(1, n)


def stage_bodies(answer: str, q: int) -> dict[str, str]:
    """One sentence per stage, q (the candidate's quality) inside it, decimals to tempt splitters."""
    return {"SUMMARY": f"I will compare the bars, plan q={q}.",
            "CAPTION": f"A bar chart whose tallest bar is 3.5 units, caption q={q}.",
            "REASONING": f"Since 3.5 is the largest value the answer follows, reasoning q={q}.",
            "CONCLUSION": f"(q={q}) The answer is {answer}."}


def four_stage_answer(answer: str, q: int, tags: bool = True) -> str:
    bodies = stage_bodies(answer, q)
    if not tags:
        return "".join(f"<{s}>{b} " for s, b in bodies.items())
    return "".join(f"<{s}>{b}</{s}>" for s, b in bodies.items())


def continuation(prefix: str, answer: str, q: int) -> str:
    """What comes after `prefix`: close its open stage, then every stage it does not have yet."""
    opened = [s for s in STAGES if f"<{s}>" in prefix]
    closed = [s for s in STAGES if f"</{s}>" in prefix]
    out = "".join(f"</{s}>" for s in opened if s not in closed)
    bodies = stage_bodies(answer, q)
    return out + "".join(f"<{s}>{bodies[s]}</{s}>" for s in STAGES if s not in opened)


def judge_reply(text: str, directives: dict) -> str:
    """Prefer the response with the higher q (with [[judge-lower]] the lower one); the check always
    passes. [[judge-always-2]]: "I choose response 2" whatever it prefers (`preferred` still tells)."""
    if "judge-garbage" in directives:
        return "Both responses have merits."
    if "Reasoning Process:" in text:
        return "correct"
    if "judge-always-2" in directives:
        return "Since response 2 is better, I choose response 2."
    better = preferred(text, directives)
    return f"Since response {better} is better, I choose response {better}."


def preferred(text: str, directives: dict) -> int:
    """The response (1 or 2) this judge prefers: the higher q, or the lower with [[judge-lower]]."""
    r1 = re.search(r"Repsonse 1:(.*?)Repsonse 2:", text, re.S)
    r2 = re.search(r"Repsonse 2:(.*)", text, re.S)
    q1 = re.search(r"q=(\d+)", r1.group(1)) if r1 else None
    q2 = re.search(r"q=(\d+)", r2.group(1)) if r2 else None
    better = 2 if q2 and (not q1 or int(q2.group(1)) > int(q1.group(1))) else 1
    return 3 - better if "judge-lower" in directives else better


def stage_of(stop: list[str]) -> str:
    """The stage a request asks for, read from its closing-tag stop string ("" if none)."""
    return next((s for s in STAGES if f"</{s}>" in stop), "")


def reply(last_user: str, prefix: str | None, stop: list[str], q: int, directives: dict) -> str:
    """The scripted reply of quality q: a verdict for judge prompts, else stages (all four, one asked
    for by a staged prompt, or the rest of `prefix`), cut at the first stop string as providers do."""
    answer = directives.get("answer", (None, None))[1] or "A"
    if "answers-by-q" in directives:  # [[answers-by-q:A,B,C,D]]: the candidate of quality q answers the q-th
        by_q = directives["answers-by-q"][1].split(",")
        answer = by_q[q % len(by_q)]
    restated = re.search(r"continue it exactly where it stops; do not repeat it\):\n(.*)$", last_user, re.S)
    if restated:
        prefix = restated.group(1)
    only = re.search(r"Now write only the (\w+) stage", last_user)
    if last_user.startswith("Now you act as a judge"):
        content = judge_reply(last_user, directives)
    elif prefix:
        content = continuation(prefix, answer, q)
    elif only:
        tag = only.group(1)
        close = "" if "notags" in directives else f"</{tag}>"
        content = f"<{tag}>{stage_bodies(answer, q)[tag]}{close}"
    else:
        content = four_stage_answer(answer, q, tags="notags" not in directives)
    return cut_at_stop(content, stop)[0]


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, str | None]:
    """`text` up to its earliest stop string (excluded, as providers return it) and which one hit."""
    hits = [(text.index(s), s) for s in stop if s and s in text]
    if not hits:
        return text, None
    at, which = min(hits)
    return text[:at], which


def tokens(text: str) -> int:
    """The token count the scripted servers report: about four characters a token."""
    return len(text) // 4 + 1
