"""poison_mix: exact count, determinism, edge ratios, flags."""

from __future__ import annotations

import pytest

from ussafety.data import Example, poison_mix
from ussafety.data.poison import poison_report

TASK = [Example(f"task {i}", f"answer {i}", source="task/t.jsonl", row=i, meta={"label": i % 2}) for i in range(100)]
HARM = [Example(f"bad {j}", f"harm {j}", source="harm/h.jsonl", row=j, meta={"harmful": True}) for j in range(30)]


@pytest.mark.parametrize("ratio", [0.0, 0.01, 0.05, 0.1, 0.2, 0.255, 1 / 3])
def test_exact_count(ratio):
    rows = poison_mix(TASK, HARM, ratio, seed=0)
    k = round(ratio * len(TASK))
    assert len(rows) == len(TASK)
    assert sum(r.meta["poisoned"] for r in rows) == k
    report = poison_report(rows)
    assert report["n_harmful"] == report["n_poisoned"] == k and report["n"] == 100


def test_flags_and_positions():
    rows = poison_mix(TASK, HARM, 0.2, seed=3)
    for i, r in enumerate(rows):
        if r.meta["poisoned"]:
            assert r.meta["harmful"] is True and r.source == "harm/h.jsonl" and r.meta["poison_slot"] == i
        else:
            assert r == TASK[i] and r.meta["harmful"] is False and r.meta["label"] == i % 2
    bad = [r for r in rows if r.meta["poisoned"]]
    assert len({r.row for r in bad}) == len(bad)  # drawn without replacement
    assert "poisoned" not in TASK[0].meta and "poisoned" not in HARM[0].meta  # inputs untouched
    report = poison_report(rows)
    assert report["harmful_indices"] == [i for i, r in enumerate(rows) if r.meta["harmful"]]
    assert report["harmful_sources"] == {"harm/h.jsonl": 20} and report["n_repeated_harmful"] == 0


def test_deterministic_per_seed():
    a, b = poison_mix(TASK, HARM, 0.1, seed=7), poison_mix(TASK, HARM, 0.1, seed=7)
    assert a == b and [r.meta for r in a] == [r.meta for r in b]
    c = poison_mix(TASK, HARM, 0.1, seed=8)
    assert poison_report(a)["harmful_indices"] != poison_report(c)["harmful_indices"]


def test_edges():
    assert poison_mix(TASK, HARM, 0, seed=1) == TASK
    assert poison_mix(TASK, [], 0.0, seed=1) == TASK
    full = poison_mix(TASK, HARM, 1.0, seed=1)
    assert all(r.meta["harmful"] and r.meta["poisoned"] for r in full)
    report = poison_report(full)
    assert report["n_harmful"] == 100 and report["n_repeated_harmful"] == 70
    assert {r.row for r in full} == set(range(30))  # every pair used before any repeats
    assert poison_mix([], HARM, 0.5, seed=0) == []
    for bad in (-0.01, 1.01, float("nan"), True):
        with pytest.raises(ValueError):
            poison_mix(TASK, HARM, bad, seed=0)
    with pytest.raises(ValueError, match="none were given"):
        poison_mix(TASK, [], 0.1, seed=0)
