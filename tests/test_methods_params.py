"""params/methods/poisoned_sst2: one file per registered method, each resolving to the
foundation's poisoned condition with only the method (and merge) changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ussafety.config import load_config
from ussafety.config.identity import config_hash_of
from ussafety.methods import REGISTRY, family_of, load_all, make_method
from ussafety.study.reports import METHOD_ORDER, method_params_files

PARAMS = Path(__file__).resolve().parent.parent / "params"
METHODS_DIR = PARAMS / "methods" / "poisoned_sst2"
FOUNDATION = PARAMS / "foundation" / "sft_poisoned_p0.1.yaml"
FILES = sorted(METHODS_DIR.glob("*.yaml"))


def test_every_registered_method_has_a_params_file_in_table_order() -> None:
    load_all()
    registered = {name for name in REGISTRY if not name.startswith("_")}  # tests register _names
    assert registered == set(METHOD_ORDER)
    assert {family_of(n) for n in registered} == {"baseline", "regularization", "replay", "merging"}
    assert registered <= {p.stem for p in FILES}
    ordered = [p.stem for p in method_params_files(METHODS_DIR)]
    assert ordered[: len(METHOD_ORDER)] == METHOD_ORDER and set(ordered) == {p.stem for p in FILES}


def test_sft_file_resolves_to_the_foundation_poisoned_condition() -> None:
    sft, foundation = load_config(METHODS_DIR / "sft.yaml"), load_config(FOUNDATION)
    assert sft.name == "sft" and config_hash_of(sft) == config_hash_of(foundation)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_each_file_resolves_and_differs_from_sft_only_in_method(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.name == path.stem
    make_method(cfg.method.name, cfg.method.params)  # unknown parameters would raise
    if cfg.merge.name:
        make_method(cfg.merge.name, cfg.merge.params)
    if path.stem in REGISTRY:  # a merge-only method is stored as SFT + that merge
        assert path.stem in (cfg.method.name, cfg.merge.name)
        assert cfg.merge.name is None or cfg.method.name == "sft"
    mine, base = cfg.to_dict(), load_config(FOUNDATION).to_dict()
    for key in ("name", "method", "merge"):
        mine.pop(key), base.pop(key)
    assert mine == base
    foundation_method = load_config(FOUNDATION).method
    assert (cfg.method.safety_set, cfg.method.n_safety) == (foundation_method.safety_set, foundation_method.n_safety)


def test_params_other_than_defaults_say_why() -> None:
    """A file that changes a default carries a comment (the CPU-budget reason)."""
    import yaml

    for path in FILES:
        written = (yaml.safe_load(path.read_text()).get("method") or {}).get("params") or {}
        if written:  # what the file sets (the resolved config fills in every default)
            text = path.read_text()
            for key in written:
                before = text[: text.index(f"{key}:")]
                assert "#" in before.split("params:")[-1], f"{path.name}: {key} has no comment"
