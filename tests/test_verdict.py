"""judges/verdict.py and judges/pairwise.py: verdict rules (faithful and robust), the reasoning
pre-check, retry-then-fallback decisions, and the judge's request layout."""
from __future__ import annotations

import random

import pytest

from engine.messages import user_message
from judges.pairwise import (
    JudgeInputs,
    NotJudgeable,
    check_messages,
    judge_inputs,
    judge_kind,
    judge_messages,
    judgeable,
    precheck_then_judge,
    prompt_fingerprints,
    render_check,
    render_judge,
    stage_hint,
)
from judges.verdict import (
    check_failed,
    check_failed_faithful,
    decide,
    extract_reason,
    parse_verdict,
    parse_verdict_faithful,
)
from stages.prompts import PROMPTS_ENV


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
    monkeypatch.delenv(PROMPTS_ENV, raising=False)


# --- the reference's own edge cases: (judge output, faithful winner, robust winner) ----------------
# Faithful: 0 iff the exact substring "I choose response 1" occurs, else 1 (llava-cot.md §3.3).
VERDICT_TABLE = [
    ('Since it is more detailed, I choose response 1.', 0, 0),
    ('Since it is more detailed, I choose response 2.', 1, 1),
    ("asdf qwerty", 1, None),                                     # garbage -> response 2
    ("", 1, None),                                                # empty -> response 2
    ("Since it is clearer, I choose Response 1.", 1, 0),          # capital R -> response 2
    ("Since it is clearer, I choose response [1].", 1, 0),        # "response [1]" -> response 2
    ("I cannot help with comparing these texts.", 1, None),       # refusal -> response 2
    ("Since response 1 gives more details about the", 1, None),   # truncated at max tokens
    ('Since both are equal, I choose response [1/2].', 1, None),  # template echoed back
    ("Since X, I choose response 1.<|eot_id|>", 0, 0),            # special token stripped
    ("I choose response 12", 0, None),                            # substring rule is literal
    ("I choose response 1? No: I choose response 2.", 0, 1),      # substring anywhere wins
    ("I would not choose response 1; I choose response 2.", 1, 1),
    ("Since response 2 is not accurate I choose response 1.", 0, 0),  # the reason's "not" negates no choice
    ("I do not really choose response 1. I choose response 2.", 1, 1),
    ("Response 2 is better because it is accurate.", 1, 1),
    ("Response 1 is clearly better.", 1, 0),
    ("Response 1 is not better.", 1, None),
    ("Response 2 is more accurate.", 1, 1),
    ("Response 1 is more verbose.", 1, None),                     # "more" alone is not praise
    ("**Response 1**", 1, 0),
    ("2", 1, 1),
    ("1", 1, 0),
    ("I choose response one.", 1, 0),
    ("Since it is richer, I chose response 1", 1, 0),
]


@pytest.mark.parametrize("text, faithful, robust", VERDICT_TABLE)
def test_verdict_table(text, faithful, robust):
    assert parse_verdict_faithful(text) == faithful
    assert parse_verdict(text) == robust


def test_faithful_verdict_of_none_goes_to_response_2():
    assert parse_verdict_faithful(None) == 1 and parse_verdict(None) is None


# Pre-check: faithful fails iff "incorrect" is a (case-sensitive) substring (llava-cot.md §3.2).
CHECK_TABLE = [
    ("correct", False, False),
    ("incorrect", True, True),
    ("The reasoning is not incorrect.", True, False),            # substring rule: counts as a fail
    ("Incorrect. Step 2 is wrong.", False, True),                # capital I: the reference passes it
    ("The reasoning process is correct.", False, False),
    ("The reasoning is not correct: 3*4 is 12, not 14.", False, True),
    ("The reasoning is not entirely correct.", False, True),
    ("The reasoning is not at all correct.", False, True),
    ("The reasoning is mostly correct.", False, False),
    ("I found errors in the calculation.", False, True),
    ("'correct'", False, False),
    ("The reasoning is correct, but the calculation is incorrect.", True, None),
    ("Let me look at this carefully", False, None),
    ("", False, None),
]


@pytest.mark.parametrize("text, faithful, robust", CHECK_TABLE)
def test_precheck_table(text, faithful, robust):
    assert check_failed_faithful(text) is faithful
    assert check_failed(text) is robust


def test_extract_reason():
    assert extract_reason('Since it lists all four bars, I choose response 2.') == "it lists all four bars"
    assert extract_reason("Response 1.") == "Response 1."
    assert extract_reason("") is None
    assert len(extract_reason("x" * 1000)) == 300


# --- decisions: retry once, then a seeded tie-break recorded as "fallback" ------------------------

def _asker(outputs):
    calls = []

    async def ask():
        calls.append(1)
        return outputs[len(calls) - 1]
    return ask, calls


async def test_decide_ok_first_try():
    ask, calls = _asker(["Since A, I choose response 1."])
    d = await decide(ask, random.Random(0))
    assert (d.winner, d.parse, d.reason, len(calls)) == (0, "ok", "A", 1)


async def test_decide_retries_once_then_succeeds():
    ask, calls = _asker(["hmm", "I choose response 2"])
    d = await decide(ask, random.Random(0))
    assert (d.winner, d.parse, len(calls)) == (1, "ok", 2)
    assert d.outputs == ["hmm", "I choose response 2"]


async def test_decide_falls_back_to_seeded_random_after_retry():
    winners = set()
    for seed in range(20):
        ask, calls = _asker(["hmm", "still nothing"])
        d = await decide(ask, random.Random(seed))
        assert d.parse == "fallback" and len(calls) == 2
        assert d.winner == random.Random(seed).randrange(2)
        winners.add(d.winner)
    assert winners == {0, 1}


async def test_decide_faithful_is_one_call_and_defaults_to_response_2():
    ask, calls = _asker(["garbage"])
    d = await decide(ask, random.Random(0), faithful=True)
    assert (d.winner, d.parse, len(calls)) == (1, "fallback", 1)
    ask, _ = _asker(["Since B, I choose response 2."])
    assert (await decide(ask, random.Random(0), faithful=True)).parse == "ok"


# --- request layout ------------------------------------------------------------------------------

APOS = "\u2019"
TAIL = (" Please strictly follow the following format requirements when outputting, and don"
        + APOS + "t have any other unnecessary words." + '\n\nOutput format: "Since [reason], I choose response [1/2]."')
RUBRIC_REASONING = ("Now you act as a judge, helping me determine which of the two texts I provide better explains "
                    "the reasoning process to solve the question, and has fewer errors. Begin by thoroughly "
                    "reviewing the question, followed by an in-depth examination of each answer individually, "
                    "noting any differences. Subsequently, analyze these differences to determine which response "
                    "demonstrates stronger reasoning and provide a clear conclusion.")
RECALL_REASONING = RUBRIC_REASONING.split("fewer errors. ", 1)[1]


def _reference_judge_prompt(rubric, recall, question, responses, hint):
    """The reference's string concatenation (llava-cot.md §3.1), rebuilt independently."""
    s = rubric + f"\n\nQuestion: {question}"
    if hint:
        s += f"\n\nHint about the Question: {hint}"
    for i, r in enumerate(responses):
        s += f"\nRepsonse {i + 1}: {r}"
    return s + f"\n\n{recall}" + TAIL


def test_reasoning_judge_matches_reference_concatenation():
    got = render_judge("reasoning", "How many?", " r one ", "r two", hint=" two cats ")
    assert got == _reference_judge_prompt(RUBRIC_REASONING, RECALL_REASONING, "How many?",
                                          [" r one ", "r two"], " two cats ")


@pytest.mark.parametrize("kind, rubric_end", [
    ("answer", "better answers the question."),
    ("all", "better answers the question."),
    ("sentence", "is a better next sentence for the answer to the question."),
])
def test_rubrics_without_recall_keep_the_reference_leading_space(kind, rubric_end):
    got = render_judge(kind, "Q", "a", "b")
    rubric = "Now you act as a judge, helping me determine which of the two texts I provide " + rubric_end
    assert got == _reference_judge_prompt(rubric, "", "Q", ["a", "b"], None)
    assert "\n\n Please strictly" in got


def test_hint_block_only_for_non_empty_hint_and_hinted_rubrics():
    assert "Hint about the Question" not in render_judge("conclusion", "Q", "a", "b", hint="")
    assert "\n\nHint about the Question: h\nRepsonse 1: a" in render_judge("conclusion", "Q", "a", "b", hint="h")
    # the reference never gives the caption or summary judge a hint
    assert "Hint" not in render_judge("caption", "Q", "a", "b", hint="h")


@pytest.mark.parametrize("kind", ["summary", "caption", "reasoning", "conclusion", "sentence", "answer"])
def test_rubric_comes_before_the_candidates(kind):
    text = render_judge(kind, "QUESTION", "CAND_ONE", "CAND_TWO", hint="HINT")
    assert text.startswith("Now you act as a judge")
    assert text.index("QUESTION") < text.index("CAND_ONE") < text.index("CAND_TWO")
    assert "Repsonse 1: CAND_ONE\nRepsonse 2: CAND_TWO" in text
    assert text.endswith('I choose response [1/2]."')


def test_judge_messages_image_first_and_omitted_without_image():
    msgs = judge_messages("summary", "Q", "a", "b", image_url="data:image/png;base64,AAAA")
    assert len(msgs) == 1 and msgs[0]["role"] == "user"
    parts = msgs[0]["content"]
    assert parts[0] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert parts[1]["type"] == "text" and parts[1]["text"] == render_judge("summary", "Q", "a", "b")
    # no image part at all without an image (the engine's text-only turn)
    assert judge_messages("summary", "Q", "a", "b") == [user_message(render_judge("summary", "Q", "a", "b"))]
    assert "image_url" not in str(judge_messages("summary", "Q", "a", "b"))


def test_check_prompt_matches_reference_and_is_text_only():
    head = ("Now you act as a judge, helping me determine whether the reasoning process in the given text "
            "is correct and accurate based on the given information.\n"
            "            You should assume that the given information about the image is correct.\n"
            "            You should only consider the reasoning process itself, not the correctness of the "
            "background information.  \n"
            "            If the reasoning process invovles any calculations, you should verify the accuracy of "
            "the calculations.\n"
            "            You should output 'correct' if you don't find any errors in the reasoning process, "
            "and 'incorrect' if you find any errors.")
    assert render_check("CAP", "REAS") == head + "\n\nGiven Information: CAP\n\nReasoning Process: REAS"
    assert render_check(str(None), "R").count("Given Information: None") == 1
    assert check_messages("c", "r") == [user_message(render_check("c", "r"))]
    assert "image_url" not in str(check_messages("c", "r"))


def test_judge_kind_and_fingerprints():
    assert judge_kind("ALL") == "answer"
    with pytest.raises(ValueError):
        judge_kind("style")
    fps = prompt_fingerprints("reasoning")
    assert set(fps) == {"judge_reasoning", "judge_hint", "check_reasoning"}
    assert "check_reasoning" not in prompt_fingerprints("caption")


# --- what the judge is shown ---------------------------------------------------------------------

FULL1 = "<SUMMARY> s1 </SUMMARY>\n<CAPTION> c1 </CAPTION>\n<REASONING> r1 </REASONING>\n<CONCLUSION> A </CONCLUSION>"
FULL2 = "<SUMMARY> s2 </SUMMARY>\n<CAPTION> c2 </CAPTION>\n<REASONING> r2 </REASONING>\n<CONCLUSION> B </CONCLUSION>"


def test_judge_inputs_faithful_extraction_and_hints():
    assert judge_inputs("summary", [FULL1, FULL2], faithful=True) == JudgeInputs((" s1 ", " s2 "), None)
    assert judge_inputs("caption", [FULL1, FULL2], faithful=True).hint is None
    # reasoning: hint is the caption, the last candidate's (the reference overwrites it in the loop)
    assert judge_inputs("reasoning", [FULL1, FULL2], faithful=True).hint == " c2 "
    # conclusion: caption + reasoning concatenated with no separator
    got = judge_inputs("conclusion", [FULL1, FULL2], faithful=True)
    assert got == JudgeInputs((" A ", " B "), " c2  r2 ")
    assert judge_inputs("all", [FULL1, FULL2], faithful=True).responses == (FULL1, FULL2)


def test_judge_inputs_robust_strips_and_tolerates_tags():
    lower = FULL2.lower().replace("</conclusion>", "")
    got = judge_inputs("conclusion", [FULL1, lower])
    assert got.responses == ("A", "b")
    assert got.hint == "c1\n\nr1"


def test_judge_inputs_sentence_views():
    a, b = "First one. Second is 3.5 kg.", "First one. Second weighs 4 kg."
    # the reference splits the decimal and shows its tail; the hint is the last candidate's
    assert judge_inputs("sentence", [a, b], faithful=True) == JudgeInputs(("5 kg", " Second weighs 4 kg"),
                                                                           "First one")
    assert judge_inputs("sentence", [b, a], faithful=True).hint == "First one  Second is 3"
    robust = judge_inputs("sentence", [a, b])
    assert robust == JudgeInputs(("Second is 3.5 kg.", "Second weighs 4 kg."), "First one.")


def test_missing_tags_are_reported_not_mis_indexed():
    no_caption = "<SUMMARY>s</SUMMARY><REASONING>r</REASONING>"
    with pytest.raises(NotJudgeable) as e:
        judge_inputs("reasoning", [FULL1, no_caption], faithful=True)
    assert e.value.candidate == 1 and "CAPTION" in str(e.value)
    # the robust path needs only the stage itself; the hint then comes from the other candidate
    assert judge_inputs("reasoning", [no_caption, FULL1]).hint == "c1"
    assert judgeable("reasoning", no_caption) and not judgeable("reasoning", no_caption, faithful=True)
    assert not judgeable("summary", None) and not judgeable("sentence", "no period", faithful=True)
    unclosed = "<SUMMARY> plan"
    assert judgeable("summary", unclosed) and not judgeable("summary", unclosed, faithful=True)
    # a whole answer cut off before its CONCLUSION has no answer: it loses (the reference judges it)
    cut_off = "<SUMMARY>s</SUMMARY><CAPTION>c</CAPTION><REASONING>r"
    assert not judgeable("answer", cut_off) and judgeable("answer", cut_off, faithful=True)
    assert judgeable("answer", FULL1) and judgeable("answer", "B, with no tags at all")


def test_stage_hint_rules():
    st = {"summary": "s", "caption": "c", "reasoning": "r"}
    assert stage_hint("summary", st) is None and stage_hint("caption", st) is None
    assert stage_hint("reasoning", st) == "c"
    assert stage_hint("conclusion", st, faithful=True) == "cr"
    assert stage_hint("conclusion", {"caption": "c"}) is None


# --- reasoning comparison order ------------------------------------------------------------------

async def _compare_recorded(fails: set[int], **rule) -> tuple[int, list[int], bool]:
    """(winner, candidates checked in order, whether the judge was asked) of one reasoning comparison
    whose check fails exactly the candidates in `fails` and whose judge names candidate 1."""
    seen, judge_calls = [], []

    async def check(i):
        seen.append(i)
        return i in fails

    async def judge():
        judge_calls.append(1)
        return 0

    winner = await precheck_then_judge(check, judge, **rule)
    return winner, seen, bool(judge_calls)


@pytest.mark.parametrize("fails, expected, checked, judged", [
    ({0}, 1, [0], False),             # candidate 1 fails: candidate 2 wins, never checked
    ({1}, 0, [0, 1], False),          # candidate 2 fails: candidate 1 wins
    ({0, 1}, 1, [0], False),          # both would fail: the first check decides
    (set(), "judge", [0, 1], True),   # neither fails: the pairwise judge decides
])
async def test_precheck_then_judge_follows_reference_order(fails, expected, checked, judged):
    winner, seen, judge_asked = await _compare_recorded(fails)
    assert seen == checked and judge_asked == judged
    assert winner == (0 if expected == "judge" else expected)


@pytest.mark.parametrize("fails, expected", [
    ({0}, 1),            # only candidate 1 fails: candidate 2 wins, no judge
    ({1}, 0),            # only candidate 2 fails: candidate 1 wins, no judge
    ({0, 1}, "judge"),   # both fail: the check prefers neither, the judge decides
    (set(), "judge"),    # neither fails: the judge decides
])
async def test_symmetric_precheck_decides_only_when_exactly_one_fails(fails, expected):
    winner, seen, judge_asked = await _compare_recorded(fails, symmetric=True)
    assert sorted(seen) == [0, 1] and judge_asked == (expected == "judge")
    assert winner == (0 if expected == "judge" else expected)


async def test_precheck_parallel_gives_same_winner():
    for fails in ({0}, {1}, {0, 1}, set()):
        async def check(i, fails=fails):
            return i in fails

        async def judge():
            return 1

        assert await precheck_then_judge(check, judge, parallel=True) == \
            await precheck_then_judge(check, judge)
