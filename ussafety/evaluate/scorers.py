"""Task scorers: pure functions that turn model text into task scores.

Each parser follows the convention of the benchmark it serves so that our utility
numbers are comparable with published ones, and each is lenient in the same,
documented way for every method we compare (a stricter parser would penalise
chat-style answers, not the fine-tuning method).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence

import numpy as np

# --- SST-2 -------------------------------------------------------------------------

_SENTIMENT_RE = re.compile(r"\b(positive|negative)\b", re.IGNORECASE)


def parse_sentiment(text: str) -> int | None:
    """1 for "positive", 0 for "negative", None when neither word appears.

    The first whole-word occurrence (case-insensitive) decides, so "Positive. It is
    not negative" is positive. Failure modes: negations ("not positive") and
    hyphenated words ("non-negative" reads as negative) are taken literally.
    """
    match = _SENTIMENT_RE.search(text)
    if match is None:
        return None
    return 1 if match.group(1).lower() == "positive" else 0


def sst2_accuracy(preds: Sequence[int | None], labels: Sequence[int]) -> float:
    """Accuracy where an unparseable prediction (None) counts as wrong; nan if empty."""
    if len(preds) != len(labels):
        raise ValueError(f"{len(preds)} predictions but {len(labels)} labels")
    if not labels:
        return float("nan")
    correct = sum(p is not None and p == y for p, y in zip(preds, labels))
    return correct / len(labels)


# --- GSM8K -------------------------------------------------------------------------

# A number, optionally signed and with a $ sign; commas only as thousands separators
# (so "1,2,3" is three numbers); a dot only when digits follow (so "18." is 18).
_NUM_RE = re.compile(r"(?<![\w.])(-)?\$?(-)?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")
_HASH_RE = re.compile(r"####")
_ANSWER_IS_RE = re.compile(r"\b(?:the\s+)?(?:final\s+)?answer\s+is\b", re.IGNORECASE)


def _normalise_number(sign: bool, digits: str) -> str:
    """Canonical text: no commas, no trailing zeros after a dot, "5.0" -> "5"."""
    s = digits.replace(",", "")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
        if s.startswith("."):
            s = "0" + s
        if not s:
            s = "0"
    if "." not in s:
        s = str(int(s))
    return "-" + s if sign and s != "0" else s


def _numbers(text: str) -> list[str]:
    return [_normalise_number(bool(m.group(1) or m.group(2)), m.group(3)) for m in _NUM_RE.finditer(text)]


def extract_final_number(text: str) -> str | None:
    """The answer number of a GSM8K-style solution, normalised, or None.

    Preference (the GSM8K convention plus the usual chat fallbacks): the first
    number after the last ``####``; else the first number after the last
    "[The] [final] answer is" (any case); else the last number anywhere. Commas,
    ``$`` and a trailing ``.`` are dropped and "5.0"/"5.00" become "5", so
    "$1,000.00" -> "1000". A "-" counts as a sign only when attached ("-5", "-$5"),
    so "16 - 3" reads as 16 and 3.
    """
    for pattern in (_HASH_RE, _ANSWER_IS_RE):
        marks = list(pattern.finditer(text))
        if marks:
            after = _numbers(text[marks[-1].end() :])
            if after:
                return after[0]
    numbers = _numbers(text)
    return numbers[-1] if numbers else None


def gsm8k_exact_match(pred_text: str, gold: str) -> bool:
    """Whether the predicted final number equals the gold one.

    ``gold`` may be the full GSM8K answer ("... #### 18") or just "18"; both sides
    go through :func:`extract_final_number`, so "18.00" matches "18".
    """
    gold_num = extract_final_number(gold)
    if gold_num is None:
        raise ValueError(f"gold answer has no number: {gold!r}")
    pred = extract_final_number(pred_text)
    return pred is not None and pred == gold_num


# --- HumanEval ---------------------------------------------------------------------

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PY_TAGS = {"python", "py", "python3", "py3", ""}


def _fenced_blocks(text: str) -> list[str]:
    """Bodies of ```python (or untagged) blocks; an unclosed last fence runs to the end."""
    return [m.group(2) for m in _FENCE_RE.finditer(text) if m.group(1).lower() in _PY_TAGS]


def _defines(code: str, entry_point: str) -> bool:
    return (
        re.search(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\(", code, re.MULTILINE) is not None
    )


def _strip_main_guard(code: str) -> str:
    """Drop top-level ``if __name__ == "__main__":`` blocks (demo code, input() calls)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    lines = code.splitlines(keepends=True)
    cut: list[tuple[int, int]] = []
    for node in tree.body:
        test = node.test if isinstance(node, ast.If) else None
        if isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__":
            cut.append((node.lineno - 1, node.end_lineno or node.lineno))
    for start, end in reversed(cut):
        del lines[start:end]
    return "".join(lines)


def _import_lines(prompt_code: str) -> str:
    return "".join(line for line in prompt_code.splitlines(keepends=True) if line.startswith(("import ", "from ")))


def _compiles(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True


def extract_code(completion: str, prompt_code: str, entry_point: str) -> str:
    """The program to test for a HumanEval task, from a base or chat model answer.

    * Code: the first fenced python (or untagged) block that defines
      ``entry_point``, else the first such block, else the raw completion.
      Top-level ``if __name__ == "__main__":`` blocks are removed.
    * If that code defines ``entry_point`` itself, it is a whole program: it is put
      after the prompt (whose stub def then gets overridden, while the prompt's
      imports and helper functions such as ``encode_cyclic`` stay available); if the
      prompt alone does not compile, only the prompt's import lines are prepended.
    * Otherwise it is a function body and is appended to the prompt; a body whose
      first line is not indented (chat answers often drop it) is indented by 4.
    """
    blocks = _fenced_blocks(completion)
    if blocks:
        code = next((b for b in blocks if _defines(b, entry_point)), blocks[0])
    else:
        code = completion
    code = _strip_main_guard(code)

    if _defines(code, entry_point):
        prefix = prompt_code if _compiles(prompt_code) else _import_lines(prompt_code)
        return prefix.rstrip("\n") + "\n\n\n" + code.strip("\n") + "\n"

    body_lines = code.strip("\n").splitlines()
    first = next((ln for ln in body_lines if ln.strip()), "")
    if first and not first[0].isspace():
        body_lines = ["    " + ln if ln.strip() else ln for ln in body_lines]
    prompt = prompt_code if prompt_code.endswith("\n") else prompt_code + "\n"
    return prompt + "\n".join(body_lines) + "\n"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021: 1 - C(n-c, k) / C(n, k).

    ``n`` samples of which ``c`` passed. Computed as a product, as in the paper's
    numpy code, to avoid huge binomials.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))
