import copy
import dataclasses
from pathlib import Path

import pytest

from ussafety.config import ConfigError, RunConfig, load_config, parse_override

PARAMS = Path(__file__).resolve().parent.parent / "params"


def test_extends_merges_presets_and_file_wins(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("train: {lr: 0.1, epochs: 3}\nseed: 5\n")
    (tmp_path / "exp.yaml").write_text("extends: base.yaml\ntrain: {lr: 0.2}\n")
    cfg = load_config(tmp_path / "exp.yaml")
    assert cfg.train.lr == 0.2 and cfg.train.epochs == 3 and cfg.seed == 5
    assert cfg.name == "exp"


def test_unknown_key_names_file_and_key_path(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("train: {lr: 0.1, lerning_rate: 2}\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "bad.yaml")
    assert "bad.yaml" in str(err.value) and "train.lerning_rate" in str(err.value)


def test_hash_ignores_name_and_changes_with_settings() -> None:
    a, b = RunConfig(name="a"), RunConfig(name="b")
    assert a.hash() == b.hash() and a.run_id != b.run_id
    b.train.lr = 1.0
    assert a.hash() != b.hash()


def test_override_parsing_and_foundation_params_resolve() -> None:
    assert parse_override("train.lora.r=4") == {"train": {"lora": {"r": 4}}}
    cfg = load_config(PARAMS / "foundation" / "sft_poisoned_p0.1.yaml", {"train": {"lr": 1e-5}})
    assert cfg.task.poison_ratio == 0.1 and cfg.train.lr == 1e-5 and cfg.model.name == "embedded"
    instruct = load_config(PARAMS / "foundation" / "instruct.yaml")
    assert instruct.align.enabled is False and instruct.task.name is None
    assert instruct.eval.task_name(instruct.task.name) == "sst2"


def test_fields_added_later_leave_the_hash_alone_at_their_default() -> None:
    from ussafety.config import AlignConfig, RunConfig, hashable_dict

    assert "n_contrastive" not in hashable_dict(AlignConfig())
    assert hashable_dict(AlignConfig(n_contrastive=8))["n_contrastive"] == 8
    base = RunConfig()
    changed = RunConfig(align=AlignConfig(n_contrastive=8))
    assert base.hash() == RunConfig().hash() != changed.hash()


def test_strip_added_later_makes_old_and_new_records_compare_equal() -> None:
    from ussafety.config import RunConfig, hashable_dict, strip_added_later

    new = dataclasses.asdict(RunConfig())
    assert new["align"]["n_contrastive"] == 0
    old = copy.deepcopy(new)
    del old["align"]["n_contrastive"]          # a record written before the field existed
    assert strip_added_later(new) == strip_added_later(old) == hashable_dict(RunConfig())
    new["align"]["n_contrastive"] = 5          # a non-default value is kept
    assert strip_added_later(new)["align"]["n_contrastive"] == 5
