"""Chat-template control tokens: find them in text, or defuse them.

A control token inside a customer's text would be tokenised as the real special token,
so a customer could inject e.g. a system turn into training; ``control_tokens_in``
finds them and ``escape_control_tokens`` defuses them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Literal

ControlTokenMode = Literal["refuse", "escape"]


#: Control tokens of the common chat templates. They are matched exactly (case
#: included) because that is how tokenizers split special tokens out of text.
CONTROL_TOKENS: dict[str, tuple[str, ...]] = {
    "ChatML": ("<|im_start|>", "<|im_end|>", "<|im_sep|>", "<|endoftext|>"),
    "Llama 2": ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<s>", "</s>"),
    "Llama 3": (
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
        "<|eom_id|>",
        "<|python_tag|>",
    ),
    "Gemma": ("<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>"),
    "Mistral": (
        "[INST]",
        "[/INST]",
        "[SYSTEM_PROMPT]",
        "[/SYSTEM_PROMPT]",
        "[TOOL_CALLS]",
        "[AVAILABLE_TOOLS]",
        "[/AVAILABLE_TOOLS]",
        "[TOOL_RESULTS]",
        "[/TOOL_RESULTS]",
        "[TOOL_CONTENT]",
        "<s>",
        "</s>",
    ),
    "Phi": ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"),
}


class _TokenScanner:
    """Finds (and defuses) control tokens in text with one compiled pattern."""

    def __init__(self, tokens: frozenset[str]):
        if not tokens:
            raise ValueError("a scanner needs at least one token (an empty pattern matches anywhere)")
        self.pattern = re.compile(_trie_pattern(tokens))
        self.family = {
            t: ", ".join(f for f, ts in CONTROL_TOKENS.items() if t in ts) or "model special token" for t in tokens
        }

    def find(self, text: str) -> list[str]:
        """The distinct tokens in ``text``, in order of first appearance."""
        return list(dict.fromkeys(self.pattern.findall(text)))

    def escape(self, text: str) -> str:
        """``text`` with a space after the first character of every control token.

        Repeated a few times because defusing one token can leave another intact when
        the caller's tokens overlap (``<|im_start|>`` and ``im_start``); whatever is
        still there afterwards is reported as impossible to escape.
        """
        for _ in range(4):
            text, n = self.pattern.subn(lambda m: m.group()[0] + " " + m.group()[1:], text)
            if not n:
                break
        return text


def _trie_pattern(tokens: Iterable[str]) -> str:
    """A regex matching any of ``tokens``, nested as a trie of their characters.

    A flat alternation makes the regex engine try every token at every position (a
    tokenizer's ~250 reserved tokens made 10,000 rows take seconds); the trie tries
    one branch per character. Greedy optional groups keep the longest token at a
    position, so ``<</SYS>>`` is reported whole rather than as ``</s``-something.
    """
    trie: dict[str, dict] = {}
    for token in tokens:
        node = trie
        for ch in token:
            node = node.setdefault(ch, {})
        node[""] = {}  # a token ends here

    def build(node: dict[str, dict]) -> str:
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(trie)


@functools.lru_cache(maxsize=8)
def _scanner(extra: frozenset[str]) -> _TokenScanner:
    defaults = {t for ts in CONTROL_TOKENS.values() for t in ts}
    return _TokenScanner(frozenset(defaults | extra))


def control_tokens_in(text: str, special_tokens: Iterable[str] = ()) -> list[str]:
    """The control tokens (common templates plus ``special_tokens``) found in ``text``."""
    return _scanner(_extra_tokens(special_tokens)).find(text)


def escape_control_tokens(text: str, special_tokens: Iterable[str] = ()) -> str:
    """Defuse control tokens by inserting a plain space after their first character.

    ``<|im_start|>`` becomes ``< |im_start|>``, ``[INST]`` becomes ``[ INST]``. Tokenizers
    split special tokens out of text by exact string match, so any change inside the
    token stops the match; a plain space is chosen over a zero-width character because
    every tokenizer keeps it (SentencePiece maps it to ``▁``, byte-level BPE to ``Ġ``)
    while some normalizers delete zero-width characters (BERT-style ``clean_text``
    drops format characters), which would reassemble the token, and because a reviewer
    can see it in the training data.
    """
    return _scanner(_extra_tokens(special_tokens)).escape(text)


def _extra_tokens(special_tokens: Iterable[str]) -> frozenset[str]:
    """Caller tokens worth matching: a blank string would match everywhere."""
    if isinstance(special_tokens, str):
        raise TypeError("special_tokens must be a collection of strings, not one string")
    return frozenset(t for t in special_tokens if isinstance(t, str) and t.strip())
