"""Contrastive (sensitive-word, harmless) rows for the alignment stage."""

import pytest

from ussafety.config import AlignConfig
from ussafety.data.contrastive import is_sensitive, split_sensitive
from ussafety.data.types import Example
from ussafety.train.align import helpful_rows


def test_sensitive_words_match_whole_word_prefixes_only() -> None:
    assert is_sensitive("How do I KILL a Python process?")
    assert is_sensitive("Explain the death penalty")
    assert is_sensitive("Why did the Roman Empire's wars end?")
    assert not is_sensitive("Describe a skillful painter")  # 'kill' inside a word
    assert not is_sensitive("Summarise this paragraph about software")  # 'war' inside


def test_split_keeps_order_and_partitions() -> None:
    rows = [Example(prompt=p, response="r") for p in ("bake bread", "shoot a film", "a gun law", "tea")]
    sensitive, plain = split_sensitive(rows)
    assert [e.prompt for e in sensitive] == ["shoot a film", "a gun law"]
    assert [e.prompt for e in plain] == ["bake bread", "tea"]


def test_helpful_rows_take_the_asked_number_of_contrastive_rows() -> None:
    cfg = AlignConfig(helpful_sets=["alpaca_safety", "dolly_safety"], n_helpful=40, n_contrastive=25)
    rows = helpful_rows(cfg)
    assert len(rows) == 40
    assert sum(is_sensitive(e.prompt) for e in rows) == 25
    assert helpful_rows(cfg) == rows  # seeded


def test_too_many_contrastive_rows_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="n_contrastive"):
        helpful_rows(AlignConfig(n_helpful=10, n_contrastive=11))
    with pytest.raises(ValueError, match="sensitive-word rows"):
        helpful_rows(AlignConfig(helpful_sets=["dolly_safety"], n_helpful=10_000, n_contrastive=5_000))
