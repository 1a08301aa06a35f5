"""stages/: tag parsing and formatting, sentence splitting, prompt files."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from stages import prompts as prompts_mod
from stages.prompts import DEFAULT_DIR, PROMPTS_ENV, PromptError, load_prompt
from stages.sentences import (
    ends_sentence_faithful,
    first_sentence_end,
    sentence_view_faithful,
    split_sentences,
    split_sentences_faithful,
)
from stages.tags import (
    STAGES,
    answer_from_conclusion,
    before_other_tags,
    extract_stage,
    format_stage,
    format_stages,
    has_stage,
    parse_stages,
)

CLEAN = ("<SUMMARY> I will count. </SUMMARY>\n\n<CAPTION> Two cats. </CAPTION>\n\n"
         "<REASONING> 1 + 1 = 2. </REASONING>\n\n<CONCLUSION> 2 </CONCLUSION>")


# --- tags ------------------------------------------------------------------------------------------

def test_stage_order():
    assert STAGES == ("summary", "caption", "reasoning", "conclusion")


def test_clean_response_parses_without_repairs():
    p = parse_stages(CLEAN)
    assert p.stages == {"summary": "I will count.", "caption": "Two cats.",
                        "reasoning": "1 + 1 = 2.", "conclusion": "2"}
    assert p.repairs == [] and p.complete and p.missing == []


@pytest.mark.parametrize("text, stage, body, repair", [
    ("<summary>plan</summary>", "summary", "plan", "summary: tag case"),
    ("< SUMMARY >plan</ SUMMARY >", "summary", "plan", "summary: spaces in tag"),
    ("<Caption>\n x \n</CAPTION>", "caption", "x", "caption: tag case"),
    ("Sure, here it is: <SUMMARY>plan</SUMMARY>", "summary", "plan", "text before the stages"),
    ("<SUMMARY>plan</SUMMARY> chatter <CAPTION>c</CAPTION>", "caption", "c", "text between stages"),
    ("<SUMMARY>plan</SUMMARY> bye!", "summary", "plan", "text after the stages"),
    ("<SUMMARY>plan<CAPTION>c</CAPTION>", "summary", "plan", "summary: no closing tag"),
    ("<SUMMARY>s</SUMMARY><CONCLUSION>B", "conclusion", "B", "conclusion: no closing tag"),
    (" The image shows a cat. </CAPTION>", "caption", "The image shows a cat.", "caption: no opening tag"),
    ("<SUMMARY>a</SUMMARY><SUMMARY>b</SUMMARY>", "summary", "a", "summary: repeated, kept the first"),
    ("<CAPTION>c</CAPTION><SUMMARY>s</SUMMARY>", "summary", "s", "stages out of order"),
    ("<SUMMARY>s</CAPTION>", "summary", "s", "summary: closed with </CAPTION>"),
])
def test_tolerant_parsing_reports_repairs(text, stage, body, repair):
    p = parse_stages(text)
    assert p.stages[stage] == body
    assert repair in p.repairs


def test_missing_closing_runs_to_next_opening_tag_not_beyond():
    p = parse_stages("<SUMMARY> plan <REASONING> why </REASONING>")
    assert p.stages["summary"] == "plan"
    assert p.stages["reasoning"] == "why"
    assert p.stages["caption"] is None
    assert not p.complete and p.missing == ["caption", "conclusion"]


def test_no_closing_tag_after_continuation_with_prefilled_opening():
    # the prompt prefilled "<CONCLUSION>"; the completion is just the body and its closing tag
    assert extract_stage(" B </CONCLUSION>", "conclusion") == "B"


def test_a_stage_reply_that_runs_on_into_another_stage_keeps_only_its_own_text():
    from stages.agent import StageAgent

    assert before_other_tags("The bar is 7.\n<REASONING>guess: 3", "caption") == "The bar is 7.\n"
    assert before_other_tags("The bar is 7.</CAPTION> <REASONING>x", "caption") == "The bar is 7.</CAPTION>"
    assert before_other_tags("no tags", "caption") == "no tags"
    assert before_other_tags("<CAPTION>The bar is 7. <REASONING>x", "caption") == "<CAPTION>The bar is 7. "
    caption = StageAgent.load("caption")
    ran_on = caption.parse("The bar is 7.\n<REASONING>guess: 3")
    assert ran_on.body == "The bar is 7."
    assert ran_on.repairs[-1] == "caption: no opening tag, took the reply up to another stage's tag"
    wrong_stage = caption.parse("<REASONING>The bar is 7.</REASONING>")
    assert wrong_stage.body == "The bar is 7." and "without its tags" in wrong_stage.repairs[-1]
    assert caption.parse("The bar is 7.").repairs == ["caption: no opening tag, took the whole reply"]


def test_empty_and_none_text():
    assert parse_stages(None).stages == {s: None for s in STAGES}
    assert parse_stages("no tags at all").repairs == []
    assert extract_stage("<SUMMARY></SUMMARY>", "summary") == ""
    assert not has_stage("<SUMMARY></SUMMARY>", "summary")
    assert has_stage("<summary>x", "summary")
    assert not has_stage(None, "caption")


def test_unknown_stage_is_an_error():
    with pytest.raises(ValueError, match="unknown stage"):
        extract_stage(CLEAN, "answer")


def test_format_stage_and_stages_round_trip():
    assert format_stage("summary", "body") == "<SUMMARY>body</SUMMARY>"
    stages = {"caption": "c", "summary": "s", "reasoning": None}
    text = format_stages(stages)
    assert text == "<SUMMARY>s</SUMMARY>\n\n<CAPTION>c</CAPTION>"
    assert parse_stages(text).stages["caption"] == "c" and parse_stages(text).repairs == []


def test_answer_from_conclusion():
    assert answer_from_conclusion(CLEAN) == "2"
    assert answer_from_conclusion("<CONCLUSION>B") == "B"
    assert answer_from_conclusion("  B  ") == "B"  # untagged text is the answer
    assert answer_from_conclusion("<SUMMARY>s</SUMMARY><CAPTION>c") is None  # never concluded
    assert answer_from_conclusion("") is None


# --- sentences -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Pi is 3.14. It costs $1.5 today!", ["Pi is 3.14.", "It costs $1.5 today!"]),
    ("Dr. Smith, e.g. him, said so. Then left.", ["Dr. Smith, e.g. him, said so.", "Then left."]),
    ("See Fig. 2 and the U.S. map. Done?", ["See Fig. 2 and the U.S. map.", "Done?"]),
    ("Apples, pears, etc. The rest.", ["Apples, pears, etc.", "The rest."]),
    ("Smith et al. (2020) found it.", ["Smith et al. (2020) found it."]),
    ("1. First step.\n2. Second step.", ["1. First step.", "2. Second step."]),
    ('He said "stop." Then ran.', ['He said "stop."', "Then ran."]),
    ("Area is 12.5 cm.</REASONING>", ["Area is 12.5 cm.", "</REASONING>"]),
    ("Wait... what? Yes.", ["Wait...", "what?", "Yes."]),
    ("A heading\n\nNext paragraph", ["A heading", "Next paragraph"]),
    ("The answer is B. Next", ["The answer is B.", "Next"]),
    ("Is it a dog? No. It is a cat.", ["Is it a dog?", "No.", "It is a cat."]),
    ("See No. 5 on p. 3 please.", ["See No. 5 on p. 3 please."]),
    ("", []),
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_first_sentence_end_keeps_exact_characters():
    text = "  The total is 3.5 kg. Next one"
    end = first_sentence_end(text)
    assert text[:end] == "  The total is 3.5 kg."
    # a trailing period may still become a decimal while generating
    assert first_sentence_end("The value is 3.", at_end=False) is None
    assert first_sentence_end("The value is 3.") == len("The value is 3.")
    assert first_sentence_end("no end yet") is None


def test_faithful_sentence_rules_reproduce_reference_quirks():
    assert split_sentences_faithful("Pi is 3.14. Yes.") == ["Pi is 3", "14", " Yes", ""]
    assert ends_sentence_faithful("costs 3.") and not ends_sentence_faithful("done.\n\n")
    # the judge sees the second-to-last piece; the hint is the earlier pieces joined by spaces
    assert sentence_view_faithful("A b. C d. E f.") == (" E f", "A b  C d")
    assert sentence_view_faithful("Only one.") == ("Only one", None)
    # ended on </CONCLUSION> instead of a period: the shared previous sentence is shown
    assert sentence_view_faithful("X. Y. <CONCLUSION>B</CONCLUSION>")[0] == " Y"
    with pytest.raises(IndexError):
        sentence_view_faithful("no period")


# --- prompts ---------------------------------------------------------------------------------------

ALL_PROMPTS = {
    "full": {"question"},
    "full_with_answer": {"question", "answer"},
    "summary": {"question"},
    "caption": {"question", "previous"},
    "reasoning": {"question", "previous"},
    "conclusion": {"question", "previous"},
    "judge_summary": {"question", "response1", "response2"},
    "judge_caption": {"question", "response1", "response2"},
    "judge_reasoning": {"question", "hint_block", "response1", "response2"},
    "judge_conclusion": {"question", "hint_block", "response1", "response2"},
    "judge_sentence": {"question", "hint_block", "response1", "response2"},
    "judge_answer": {"question", "response1", "response2"},
    "judge_hint": {"hint"},
    "check_reasoning": {"caption", "reasoning"},
}


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
    monkeypatch.delenv(PROMPTS_ENV, raising=False)


@pytest.mark.parametrize("name, fields", sorted(ALL_PROMPTS.items()))
def test_every_prompt_file_exists_with_its_fields(name, fields):
    p = load_prompt(name)
    assert p.fields == fields
    assert p.text and not p.text.endswith("\n")
    assert p.path == DEFAULT_DIR / f"{name}.txt"


@pytest.mark.parametrize("stage", STAGES)
def test_step_prompts_ask_for_their_own_tag_only(stage):
    text = load_prompt(stage).text
    tag = stage.upper()
    assert f"<{tag}>" in text and f"</{tag}>" in text
    assert f"only the {tag} stage" in text


def test_full_prompt_is_the_reference_data_prompt():
    text = load_prompt("full").text
    assert text.startswith("I have an image and a question that I want you to answer.")
    assert "(Do not forget </CONCLUSION>!)" in text
    assert text.endswith("\nQuestion: {question}")


def test_fingerprint_is_sha256_of_file_bytes_and_name_suffix_optional():
    p = load_prompt("judge_caption.txt")
    assert p.name == "judge_caption"
    assert p.fingerprint == hashlib.sha256(p.path.read_bytes()).hexdigest()[:16]


def test_render_fills_fields_in_one_pass_and_leaves_other_braces():
    p = prompts_mod.Prompt("t", 'JSON {"a": 1} \\boxed{} {x} and {y}', "f", Path("t.txt"))
    assert p.fields == {"x", "y"}
    # a value containing another placeholder is not substituted again
    assert p.render(x="{y}", y="Y", extra="ignored") == 'JSON {"a": 1} \\boxed{} {y} and Y'


def test_render_missing_field_is_a_clear_error():
    with pytest.raises(PromptError, match=r"judge_answer.*response2"):
        load_prompt("judge_answer").render(question="q", response1="a")
    with pytest.raises(PromptError, match="question"):
        load_prompt("full").render(question=None)


def test_unknown_prompt_names_the_folders_searched(tmp_path, monkeypatch):
    with pytest.raises(PromptError, match="nope.txt"):
        load_prompt("nope", tmp_path)
    with pytest.raises(PromptError, match="bad prompt name"):
        load_prompt("../etc/passwd")
    with pytest.raises(PromptError, match="not a folder"):
        load_prompt("full", tmp_path / "missing")
    monkeypatch.setenv(PROMPTS_ENV, str(tmp_path / "typo"))
    with pytest.raises(PromptError, match=PROMPTS_ENV):
        load_prompt("full")


def test_override_folder_by_argument_and_env(tmp_path, monkeypatch):
    (tmp_path / "full.txt").write_text("Answer: {question}\n", encoding="utf-8")
    p = load_prompt("full", tmp_path)
    assert p.render(question="2+2?") == "Answer: 2+2?"
    assert p.fingerprint != load_prompt("full").fingerprint
    # files the override lacks come from the packaged folder
    assert load_prompt("summary", tmp_path).path == DEFAULT_DIR / "summary.txt"
    monkeypatch.setenv(PROMPTS_ENV, str(tmp_path))
    assert load_prompt("full").text == "Answer: {question}"


def test_editing_a_file_changes_behaviour_without_reload(tmp_path):
    f = tmp_path / "judge_hint.txt"
    f.write_text("Hint: {hint}", encoding="utf-8")
    first = load_prompt("judge_hint", tmp_path)
    f.write_text("Context: {hint}", encoding="utf-8")
    second = load_prompt("judge_hint", tmp_path)
    assert second.render(hint="h") == "Context: h"
    assert first.fingerprint != second.fingerprint
