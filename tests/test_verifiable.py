"""tether.verifiable: the final answer of a response, `correct` against the answer column and `format` of
the last line, on hand-worked responses (the expected value of each is read off the text by the rules in
the module docstring, written beside the case)."""

from decimal import Decimal

import pytest

from tether.errors import TetherError
from tether.rewards import FunctionReward
from tether.verifiable import correct, final_answer, format

CASES = [  # (response, the final answer by the rules, as text; None: no final answer)
    ("Answer: 8", "8"),
    ("5 + 3 = 8\nAnswer: 8", "8"),  # after the marker, not the last number of the text
    ("Answer: 7\nNo wait, 5 + 3 = 8. Answer: 8 apples.", "8"),  # the last marker; its first number after
    ("answer:\n12", "12"),  # any case; the number may sit on the next line
    ("Answer: 8 (5 + 3)", "8"),  # the first number after the marker, not the last
    ("So she has 5 + 3 = 8 apples.", "8"),  # no marker: the last number
    ("The shop has 1,250 pens.", "1250"),  # thousands commas
    ("It costs $3.50.", "3.5"),  # decimals by value; the full stop is no decimal part
    ("10-3=7", "7"),
    ("Answer: -4", "-4"),
    ("x =-4", "-4"),  # a sign after "=" counts
    ("Answer: 10-3", "10"),  # "-3" right after a digit is not a sign: the first number is 10
    ("3,4,5", "5"),  # not thousands: three numbers
    ("1,2345", "2345"),  # "1,234" would leave a digit behind: 1 and 2345
    ("Answer: none", None),  # a marker with no number after it: no answer (not the earlier numbers)
    ("I have 3 apples. Answer: I do not know", None),
    ("no numbers here", None),
    ("", None),
]


@pytest.mark.parametrize(("response", "want"), CASES)
def test_final_answer_follows_the_documented_rules(response, want):
    assert final_answer(response) == (None if want is None else Decimal(want))


def test_correct_compares_by_value_and_skips_a_missing_answer():
    """Answers "8", "3.5", "1250", 42 (a JSON number), "7", None: responses 8 (right), 3.50 (= 3.5, right),
    1,250 (= 1250, right), 42 (right), 8 (wrong), anything (None: the reward does not apply)."""
    responses = ["Answer: 8", "It costs 3.50", "Answer: 1,250", "Answer: 42.0", "Answer: 8", "Answer: 1"]
    answers = ["8", "3.5", "1250", 42, "7", None]
    assert correct([""] * 6, responses, answer=answers) == [1.0, 1.0, 1.0, 1.0, 0.0, None]


def test_correct_without_a_final_answer_is_wrong():
    assert correct(["", ""], ["Answer: none", "no idea"], answer=["0", "0"]) == [0.0, 0.0]


@pytest.mark.parametrize("bad", ["eight", "8 apples", "", True, [8]])
def test_an_answer_that_is_not_a_number_is_one_line(bad):
    with pytest.raises(TetherError, match=r"^tether\.verifiable: answer .* is not a number$"):
        correct([""], ["Answer: 8"], answer=[bad])


FORMATS = [  # (response, 1 when its last non-empty line is "Answer: <number>")
    ("Answer: 8", 1.0),
    ("5 + 3 = 8.\nAnswer: 8", 1.0),
    ("5 + 3 = 8.\n\nanswer:   8.  \n\n", 1.0),  # any case, a full stop, spaces and blank lines after
    ("Answer: -3.5", 1.0),
    ("Answer: 8 apples", 0.0),  # more than the number
    ("Answer: 8\nHope this helps!", 0.0),  # not the last line
    ("The answer is 8", 0.0),
    ("Answer: eight", 0.0),
    ("**Answer:** 8", 0.0),
    ("", 0.0),
]


@pytest.mark.parametrize(("response", "want"), FORMATS)
def test_format_checks_the_last_line_only(response, want):
    assert format([""], [response]) == [want]


def test_the_functions_work_as_reward_specs_with_the_answer_column():
    """Through tether.rewards as `reward.source` names them: correct reads `answer`, format no column."""
    responses, answers = ["Answer: 3", "Answer: 4"], ["3", "5"]
    right = FunctionReward("tether.verifiable:correct")(["p", "q"], responses, answer=answers)
    shape = FunctionReward("tether.verifiable:format")(["p", "q"], ["Answer: 3", "3"], answer=answers)
    assert right.tolist() == [1.0, 0.0] and shape.tolist() == [1.0, 0.0]
