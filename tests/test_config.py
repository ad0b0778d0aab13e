"""Typed config and run identity: spellings, defaults, stamps, and every kind of bad config."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

import ussafety.config.identity as identity
from ussafety.config import ConfigError, RunConfig, canonical, load_config, parse_override, run_id
from ussafety.methods import REGISTRY

PARAMS = Path(__file__).resolve().parent.parent / "params"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_extends_merges_presets_and_file_wins(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "train: {lr: 0.1, epochs: 3}\nseed: 5\n")
    cfg = load_config(write(tmp_path, "exp.yaml", "extends: base.yaml\ntrain: {lr: 0.2}\n"))
    assert cfg.train.lr == 0.2 and cfg.train.epochs == 3 and cfg.seed == 5
    assert cfg.name == "exp"


def test_override_is_converted_to_the_field_type() -> None:
    over = parse_override("train.lr=1e-4")  # YAML reads 1e-4 as a string
    assert over == {"train": {"lr": "1e-4"}}
    cfg = load_config(PARAMS / "foundation" / "sft_poisoned_p0.1.yaml", over)
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.task.poison_ratio == 0.1 and cfg.model.name == "embedded"


def test_two_spellings_of_one_computation_share_one_id(tmp_path: Path) -> None:
    short = load_config(write(tmp_path, "a.yaml", "method: {name: slerp}\n"))
    spelled = load_config(
        write(
            tmp_path,
            "b.yaml",
            "method: {name: sft}\nmerge: {name: slerp, params: {t: 0.5}}\n"
            "train: {lr: 2.0e-4, epochs: 2}\neval: {batch_size: 64}\n",
        )
    )
    assert run_id(short) == run_id(spelled)
    assert (short.method.name, short.merge.name) == ("sft", "slerp")
    assert short.merge.params == {"t": 0.5, "eps": 5e-4}  # defaults filled in


def test_label_and_generation_batch_do_not_change_the_id() -> None:
    a = RunConfig(name="a")
    b = RunConfig(name="b", eval={"batch_size": 3})
    assert run_id(a) == run_id(b)
    assert set(identity.EXCLUDED) == {"name", "eval.batch_size", "train.report_to", "align.train.report_to"}
    assert all(identity.EXCLUDED.values())  # each with its reason


def test_changed_setting_or_default_gives_a_new_id(monkeypatch: pytest.MonkeyPatch) -> None:
    base = RunConfig()
    assert run_id(RunConfig(train={"lr": 1e-3})) != run_id(base)
    der = RunConfig(method={"name": "der"})
    monkeypatch.setattr(REGISTRY["der"].__dataclass_fields__["alpha"], "default", 0.9)
    assert RunConfig(method={"name": "der"}).method.params["alpha"] == 0.9
    assert run_id(RunConfig(method={"name": "der"})) != run_id(der)


def test_bumped_stamp_gives_a_new_id(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = RunConfig(method={"name": "ewc"})
    before = run_id(cfg)
    monkeypatch.setitem(identity.STAMPS, "evaluation", 2)
    assert run_id(cfg) != before
    monkeypatch.setitem(identity.STAMPS, "evaluation", 1)
    monkeypatch.setattr(REGISTRY["ewc"], "version", 2)
    assert run_id(cfg) != before
    assert run_id(RunConfig(method={"name": "der"})) == run_id(RunConfig(method={"name": "der"}))


def test_sections_that_cannot_act_are_not_part_of_the_id() -> None:
    a = RunConfig(align={"enabled": False, "n_refusal": 5}, task={"name": None}, train={"lr": 1.0})
    b = RunConfig(align={"enabled": False}, task={"name": None})
    assert run_id(a) == run_id(b) and "train" not in canonical(a)
    assert canonical(RunConfig(), cuda=False)["model"] == {
        "name": "embedded",
        "backend": "peft",
        "dtype": "float32",
        "revision": None,
    }


def test_an_upload_is_identified_by_its_content(tmp_path: Path) -> None:
    f = write(tmp_path, "up.jsonl", '{"instruction": "hi", "output": "hello"}\n')
    a = RunConfig(task={"name": None, "upload": str(f)})
    f2 = tmp_path / "copy.jsonl"
    f2.write_bytes(f.read_bytes())
    assert run_id(RunConfig(task={"name": None, "upload": str(f2)})) == run_id(a)
    f2.write_text('{"instruction": "hi", "output": "bye"}\n')
    assert run_id(RunConfig(task={"name": None, "upload": str(f2)})) != run_id(a)


BAD = {
    "unknown key": ("train: {lr: 0.1, lerning_rate: 2}\n", ["train.lerning_rate", "unknown key", "lr"]),
    "wrong type": ("train: {epochs: many}\n", ["train.epochs", "many"]),
    "unknown method": ("method: {name: dre}\n", ["method", "dre", "der"]),
    "unknown method param": ("method: {name: der, params: {alpah: 1}}\n", ["alpah", "alpha"]),
    "wrong method param type": ("method: {name: der, params: {alpha: lots}}\n", ["alpha"]),
    "unknown judge": ("eval: {judges: [keyword, lama_guard]}\n", ["eval.judges", "lama_guard", "llama_guard"]),
    "unknown task": ("task: {name: sst3}\n", ["task.name", "sst3", "gsm8k"]),
    "unknown data set": ("eval: {harmful_sets: [advbnch]}\n", ["eval.harmful_sets", "advbnch", "advbench"]),
    "out of range": ("task: {poison_ratio: 1.5}\n", ["task.poison_ratio", "1.5"]),
    "non-positive lr": ("train: {lr: 0}\n", ["train.lr", "greater than 0"]),
    "bad literal": ("model: {dtype: fp8}\n", ["model.dtype", "float32"]),
    "missing upload": ("task: {upload: nowhere.jsonl}\n", ["task.upload", "nowhere.jsonl"]),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_each_bad_config_names_file_key_and_allowed_values(kind: str, tmp_path: Path) -> None:
    text, needles = BAD[kind]
    path = write(tmp_path, "bad.yaml", text)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert time.perf_counter() - t0 < 10  # generous: the point is "before any model loads"
    message = str(err.value)
    assert "bad.yaml" in message, message
    for needle in needles:
        assert needle in message, (needle, message)


def test_missing_params_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.yaml")
    assert "no such params file" in str(err.value) and "\n" not in str(err.value)


def test_cli_rejects_bad_config_early_without_a_run_directory(tmp_path: Path) -> None:
    """The real command line: exit 2, the message on stderr, nothing written, and fast
    (the time includes the interpreter and torch imports; printed for the CI log)."""
    path = write(
        tmp_path,
        "bad.yaml",
        "extends: " + str(PARAMS / "presets" / "smoke.yaml") + "\nmethod: {name: der, params: {alpah: 1}}\n",
    )
    runs = tmp_path / "runs"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ussafety.cli.main", "run", str(path), "--runs", str(runs)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - t0
    print(f"bad config rejected by the CLI in {elapsed:.2f} s")
    assert proc.returncode == 2, proc.stderr
    assert "alpah" in proc.stderr and "Traceback" not in proc.stderr
    assert not runs.exists()


def test_every_committed_params_file_resolves() -> None:
    files = sorted(PARAMS.glob("foundation/*.yaml")) + sorted(PARAMS.glob("methods/*/*.yaml"))
    ids = {f.name: run_id(load_config(f)) for f in files}
    assert ids["sft.yaml"] == ids["sft_poisoned_p0.1.yaml"]  # one computation, two files
    assert len(set(ids.values())) == len(ids) - 1


def test_trackers_are_transformers_integrations() -> None:
    """``config.trackers.TRACKERS`` is a copy (validation must not import transformers): keep it equal."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    from ussafety.config.trackers import TRACKERS

    assert sorted(TRACKERS) == sorted(INTEGRATION_TO_CALLBACK) == list(TRACKERS)


def test_each_method_lives_in_the_module_of_its_name() -> None:
    """What lets a config import only the method it names (``methods.method_class``)."""
    from ussafety.methods import load_all, method_class, method_names

    load_all()
    public = sorted(n for n in REGISTRY if not n.startswith("_"))
    assert method_names() == public
    assert all(method_class(n).__module__ == f"ussafety.methods.{n}" for n in public)
    with pytest.raises(ValueError, match=r"unknown merge 'dre' \(known: agem, der"):
        method_class("dre", "merge")


def test_a_method_registered_in_another_module_is_refused() -> None:
    from ussafety.methods import Method, register

    stray = type("Stray", (Method,), {"__module__": "ussafety.methods.der"})
    with pytest.raises(ValueError, match="belongs in methods/stray.py"):
        register("stray")(stray)
    assert "stray" not in REGISTRY


def test_gpu_build_is_read_from_torchs_version_file_as_torch_says() -> None:
    """``_cuda()`` answers False without importing torch only for a CPU build of torch."""
    import torch

    assert identity._torch_gpu_build() == (torch.version.cuda is not None or torch.version.hip is not None)
    if not identity._torch_gpu_build():
        assert torch.cuda.is_available() is False
