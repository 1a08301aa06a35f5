"""judges/scorers.py: exact match, option letters, ChartQA relaxed accuracy, and `score`."""
from __future__ import annotations

import pytest

from judges.scorers import (
    answer_part,
    choice_match,
    exact_match,
    extract_choice,
    normalize,
    relaxed_match,
    score,
    to_number,
)


@pytest.mark.parametrize("text, expected", [
    ("The Cat.", "cat"),
    ("  an  Apple, please! ", "apple please"),
    ("3.5 kg.", "3.5 kg"),
    ("\u201cYes\u201d", "yes"),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("pred, ref, ok", [
    ("Paris.", "paris", True),
    ("The answer is Paris", "Paris", True),
    ("Final answer: yes", "Yes", True),
    ("the Eiffel tower", "Eiffel Tower", True),
    ("Lyon", "Paris", False),
    ("Paris, France", "Paris", False),
    ("", "Paris", False),
])
def test_exact_match(pred, ref, ok):
    assert exact_match(pred, ref) is ok


@pytest.mark.parametrize("answer, choices, letter", [
    ("B", None, "B"),
    ("(B)", None, "B"),
    ("B.", None, "B"),
    ("**C**", None, "C"),
    ("B. cat", None, "B"),
    ("B) cat", None, "B"),
    ("(D) a red car", None, "D"),
    ("The answer is B.", None, "B"),
    ("The correct option is (C).", None, "C"),
    ("Answer: D", None, "D"),
    ("A", None, "A"),
    ("b", None, "B"),                               # a letter alone, in either case
    ("b", ["dog", "cat"], "B"),
    ("A. dog", None, "A"),
    ("A cat sits on the mat.", None, None),         # the article is not an option
    ("The answer is a cat", None, None),
    ("Answer: I think so", None, None),             # the pronoun is not an option
    ("cat", ["dog", "cat", "cow"], "B"),            # option text maps to its letter
    ("The answer is cat.", ["dog", "cat"], "B"),
    ("20.0", ["10", "20"], "B"),                    # a number is its option whatever its form
    ("The answer is 1,000", ["100", "1000"], "B"),
    ("E", ["dog", "cat"], None),                    # beyond the options
    ("yes", None, None),
    ("", None, None),
])
def test_extract_choice(answer, choices, letter):
    assert extract_choice(answer, choices) == letter


def test_choice_match():
    assert choice_match("The answer is B.", "B")
    assert choice_match("(B) cat", "(B)")
    assert choice_match("cat", "B", ["dog", "cat"])
    assert choice_match("B", "cat", ["dog", "cat"])   # reference given as option text
    assert not choice_match("C", "B")
    assert not choice_match("I am not sure", "B")


@pytest.mark.parametrize("text, value", [
    ("12", 12.0), ("1,234.5", 1234.5), ("$3.2", 3.2), ("45%", 45.0), ("-0.5.", -0.5), (".5", 0.5),
    ("12 apples", None), ("1,23", None), ("abc", None), ("", None), (".", None),
])
def test_to_number(text, value):
    assert to_number(text) == value


@pytest.mark.parametrize("pred, ref, ok", [
    ("12.4", "12", True),          # 3.3% off
    ("12.6", "12", True),          # exactly 5%
    ("12.7", "12", False),         # 5.8% off
    ("95", "100", True),
    ("94.9", "100", False),
    ("-10.4", "-10", True),
    ("FINAL ANSWER: 1,234", "1200", True),
    ("0", "0", True),              # zero reference: string match (as the official metric)
    ("0.01", "0", False),
    ("Yes", "yes", True),
    ("Yes.", "yes", True),
    ("Rome", "Paris", False),
    ("12 apples", "12", False),
])
def test_relaxed_match(pred, ref, ok):
    assert relaxed_match(pred, ref) is ok


@pytest.mark.parametrize("pred, ref, choices, ok", [
    ("The answer is B.", "B", None, True),           # letter reference -> option letter
    ("B", "(B)", None, True),
    ("C", "B", None, False),
    ("cat", "B", ["dog", "cat"], True),              # choices given -> option letter
    ("12.4", "12", None, True),                      # numeric reference -> relaxed accuracy
    ("13", "12", None, False),
    ("the Eiffel Tower", "Eiffel Tower", None, True),  # otherwise normalized exact match
    ("Louvre", "Eiffel Tower", None, False),
    (None, "B", None, False),
    ("B", None, None, False),
    ("b", "B", None, True),                          # a letter alone, in either case
    ("b", "b", ["dog", "cat"], True),
    ("B", "b", ["dog", "cat"], True),
    ("The answer is -3", "-3", None, True),           # the minus is the number's, not the phrase's
    ("The answer is -3", "3", None, False),
    ("Answer - 3", "3", None, True),
])
def test_score_picks_the_rule(pred, ref, choices, ok):
    assert score(pred, ref, choices) is ok


def test_answer_part():
    assert answer_part("Reasoning here. Final answer: 42") == "42"
    assert answer_part("The answer is B.") == "B."
    assert answer_part("no marker") == "no marker"
    assert answer_part("I answered it") == "I answered it"
    assert answer_part("The answer is -3") == "-3"
    assert answer_part("Answer - cat") == "cat"
