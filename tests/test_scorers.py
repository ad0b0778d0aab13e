"""Task scorers: SST-2 parsing, GSM8K extraction, HumanEval code extraction, pass@k."""

from __future__ import annotations

import math

import pytest

from ussafety.evaluate.scorers import (
    extract_code,
    extract_final_number,
    gsm8k_exact_match,
    parse_sentiment,
    pass_at_k,
    sst2_accuracy,
)

# --- SST-2 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("positive", 1),
        ("Negative", 0),
        ("The sentiment is POSITIVE.", 1),
        ("Sentiment: negative. It is not positive.", 0),
        ("Positive, although parts are negative", 1),
        ("neutral", None),
        ("", None),
        ("positively glowing", None),  # whole words only
        ("a negatively-charged review", None),
    ],
)
def test_parse_sentiment(text: str, expected: int | None) -> None:
    assert parse_sentiment(text) == expected


def test_sst2_accuracy_counts_none_as_wrong() -> None:
    assert sst2_accuracy([1, 0, None, 1], [1, 1, 0, 1]) == pytest.approx(0.5)
    assert sst2_accuracy([None, None], [0, 1]) == 0.0
    assert math.isnan(sst2_accuracy([], []))
    with pytest.raises(ValueError):
        sst2_accuracy([1], [1, 0])


# --- GSM8K -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18"),
        ("#### 1,234", "1234"),
        ("It costs $1,000.00 in total.", "1000"),
        ("The answer is 5.0.", "5"),
        ("So the final answer is $42. Check: 40 + 2 = 42 with 3 left", "42"),
        ("First 3 apples, then 4 more, so 7.", "7"),
        ("The temperature fell to -5 degrees", "-5"),
        ("She lost -$12.50 overall", "-12.5"),
        ("#### 18\nThe answer is 20. Later 30", "18"),  # #### wins over the rest
        ("Half of it: .5 cups", "0.5"),
        ("a list 1,2,3", "3"),  # commas not thousands groups
        ("no digits here", None),
        ("#### (no number)\nanswer is 9", "9"),
    ],
)
def test_extract_final_number(text: str, expected: str | None) -> None:
    assert extract_final_number(text) == expected


def test_gsm8k_exact_match() -> None:
    gold = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n#### 18"
    assert gsm8k_exact_match("9 eggs at $2 each is $18.00.", gold)
    assert gsm8k_exact_match("The answer is 18", "18")
    assert not gsm8k_exact_match("The answer is 17", gold)
    assert not gsm8k_exact_match("I don't know", gold)
    assert gsm8k_exact_match("#### 1,000", "1000")
    with pytest.raises(ValueError):
        gsm8k_exact_match("18", "no number")


# --- HumanEval code extraction ----------------------------------------------------

PROMPT = '''from typing import List


def helper(x: int) -> int:
    return x * 2


def double_all(numbers: List[int]) -> List[int]:
    """ Double every number.
    >>> double_all([1, 2])
    [2, 4]
    """
'''


def _run(program: str) -> list[int]:
    namespace: dict = {"__name__": "extracted"}
    exec(compile(program, "<program>", "exec"), namespace)  # trusted test code
    return namespace["double_all"]([1, 2, 3])


def test_extract_code_fenced_full_function() -> None:
    completion = (
        "Here is the solution:\n\n```python\ndef double_all(numbers):\n"
        "    return [helper(n) for n in numbers]\n\n"
        'if __name__ == "__main__":\n    print(double_all([input()]))\n```\n'
        "It uses the helper."
    )
    program = extract_code(completion, PROMPT, "double_all")
    assert program.startswith("from typing import List")
    assert "__main__" not in program and "Here is" not in program
    assert _run(program) == [2, 4, 6]


def test_extract_code_prefers_block_that_defines_entry_point() -> None:
    completion = (
        "```\npip install nothing\n```\n```python\ndef double_all(numbers):\n    return [2 * n for n in numbers]\n```"
    )
    assert _run(extract_code(completion, PROMPT, "double_all")) == [2, 4, 6]


def test_extract_code_unfenced_body() -> None:
    completion = "    return [helper(n) for n in numbers]\n"
    program = extract_code(completion, PROMPT, "double_all")
    assert program.startswith(PROMPT)
    assert _run(program) == [2, 4, 6]


def test_extract_code_fenced_unindented_body() -> None:
    completion = "```python\nresult = [n * 2 for n in numbers]\nreturn result\n```"
    assert _run(extract_code(completion, PROMPT, "double_all")) == [2, 4, 6]


def test_extract_code_unclosed_fence() -> None:
    completion = "```python\ndef double_all(numbers):\n    return [n + n for n in numbers]\n"
    assert _run(extract_code(completion, PROMPT, "double_all")) == [2, 4, 6]


def test_extract_code_uncompilable_prompt_keeps_imports_only() -> None:
    prompt = "import math\nfrom typing import List\n\ndef root(x: float) -> float:\n"
    completion = "```python\ndef root(x):\n    return math.sqrt(x)\n```"
    program = extract_code(completion, prompt, "root")
    namespace: dict = {}
    exec(compile(program, "<program>", "exec"), namespace)
    assert namespace["root"](9.0) == 3.0
    assert program.startswith("import math\nfrom typing import List\n")


# --- pass@k ------------------------------------------------------------------------


def test_pass_at_k_hand_values() -> None:
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    # 1 - C(2,2)/C(4,2) = 1 - 1/6
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)
    # 1 - C(7,5)/C(10,5) = 1 - 21/252
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    assert pass_at_k(5, 4, 2) == 1.0  # n - c < k
    assert pass_at_k(1, 1, 1) == 1.0


def test_pass_at_k_validates() -> None:
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 6)
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 0)
