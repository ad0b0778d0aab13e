"""A fine-tuning run leaves an HF-compatible adapter (PEFT ``save_pretrained``) with a model
card: it loads back with peft/transformers as the model that was evaluated, and the card
states the method, the data, the seed, the run id and the measured safety."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ussafety.config import load_config
from ussafety.data.types import Example
from ussafety.paths import PROJECT_ROOT
from ussafety.pipeline import run
from ussafety.records import Record, run_dir
from ussafety.records.card import CARD, card_metadata, model_card

SMOKE = PROJECT_ROOT / "params" / "presets" / "smoke.yaml"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Record, Path]:
    """One poisoned smoke run (tiny random model, aligned base, LoRA) and its runs folder."""
    root = tmp_path_factory.mktemp("card_runs")
    params = root / "poisoned.yaml"
    params.write_text(f"extends: {SMOKE}\nseed: 3\ntask: {{poison_ratio: 0.25}}\nmethod: {{name: l2}}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("USSAFETY_CACHE", str(root / "cache"))
        record = run(load_config(params), root=root / "runs")
    return record, root / "runs"


def test_the_adapter_loads_back_as_the_evaluated_model(finished: tuple[Record, Path]) -> None:
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ussafety.evaluate.generate import generate_for

    record, root = finished
    adapter = run_dir(record.run_id, root) / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", CARD} <= {p.name for p in adapter.iterdir()}
    assert PeftConfig.from_pretrained(str(adapter)).peft_type == "LORA"
    base = AutoModelForCausalLM.from_pretrained(record.model_source)  # the aligned base the card names
    tokenizer = AutoTokenizer.from_pretrained(record.model_source)
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    harmful = [g for g in record.generations if g.kind == "harmful"][:4]
    answers = generate_for(
        model,
        tokenizer,
        [Example(prompt=g.prompt) for g in harmful],
        max_new_tokens=record.config["eval"]["max_new_tokens"],
    )
    assert answers == [g.response for g in harmful]  # greedy: the same answers as in the record


def test_the_card_states_method_data_seed_run_and_measured_safety(finished: tuple[Record, Path]) -> None:
    record, root = finished
    text = (run_dir(record.run_id, root) / "adapter" / CARD).read_text(encoding="utf-8")
    meta = card_metadata(text)
    assert meta["base_model"] == "tiny-random" and meta["library_name"] == "peft"
    assert {"ussafety", "safety", "lora", "l2", "base_model:adapter:tiny-random"} <= set(meta["tags"])
    m = record.metrics
    asr = m.asr[m.primary_judge]
    assert m.over_refusal is not None and m.task is not None and record.train is not None
    poison = record.train.poison
    expected = [
        f"# {record.run_id}",
        "- method: `l2` (regularization, version 1), params `"
        + json.dumps(record.config["method"]["params"], sort_keys=True)
        + "`",
        "- task: `sst2`, 16 rows asked",
        f"- poison ratio: 0.25 (harmful rows from `beavertails_pairs`: {poison['n_harmful']})",
        f"- rows trained on: {poison['n']} ({poison['n_task']} task, {poison['n_harmful']} harmful)",
        f"- seed: {record.seed}",
        f"alignment key `{record.alignment.key}`",
        f"| ASR (harmful prompts) | {asr.asr:.3f} [{asr.asr_ci_low:.3f}, {asr.asr_ci_high:.3f}] | {asr.n} | keyword |",
        f"| over-refusal (XSTest safe prompts) | {m.over_refusal.rate:.3f} "
        f"[{m.over_refusal.ci_low:.3f}, {m.over_refusal.ci_high:.3f}] | {m.over_refusal.n} | keyword |",
        f"| task score (sst2) | {m.task.score:.3f} [{m.task.ci_low:.3f}, {m.task.ci_high:.3f}] | {m.task.n} | |",
        "Wilson 95% intervals",
    ]
    missing = [line for line in expected if line not in text]
    assert not missing, text
    assert record.seed == 3 and asr.n == 12 and poison["n"] == 16


def test_an_upload_is_named_by_its_sha256(finished: tuple[Record, Path]) -> None:
    record, _ = finished
    sha = "ab" * 32
    upload = record.model_copy(
        update={
            "config": {**record.config, "task": {**record.config["task"], "upload": "/data/customer.jsonl"}},
            "data_sha256": {**record.data_sha256, "/data/customer.jsonl": sha},
        }
    )
    assert f"- upload: `customer.jsonl`, sha256 `{sha}`" in model_card(upload)


def test_runs_without_fine_tuning_keep_no_adapter(tmp_path: Path) -> None:
    """The aligned base itself is a cached folder: its run keeps no copy and no card."""
    params = tmp_path / "aligned.yaml"
    params.write_text(f"extends: {SMOKE}\ntask: {{name: null}}\neval: {{task: sst2}}\n")
    record = run(load_config(params), root=tmp_path / "runs")
    assert not (run_dir(record.run_id, tmp_path / "runs") / "adapter").exists()
