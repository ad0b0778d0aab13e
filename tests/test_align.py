"""The alignment stage's options: look-alike rows, full fine-tuning, the DPO stage (tiny model)."""

from __future__ import annotations

import json

import pytest
import torch

from ussafety.config import AlignConfig, RunConfig
from ussafety.data.contrastive import is_soft_refusal
from ussafety.train import align


def test_lookalike_rows_are_plain_help_from_the_refusal_set() -> None:
    cfg = AlignConfig(n_refusal=8, n_helpful=4, n_lookalike=6)
    rows = align.alignment_data(cfg)
    assert len(rows) == 18
    looks = align.lookalike_pool(cfg)
    assert len(looks) > 200
    assert all(not e.meta["keyword_refusal"] and not is_soft_refusal(e.response or "") for e in looks)
    refusal_prompts = {e.prompt for e in align.refusal_pool(cfg)}
    assert not refusal_prompts & {e.prompt for e in looks}


def test_without_lookalikes_the_mix_is_unchanged() -> None:
    before = align.alignment_data(AlignConfig(n_refusal=8, n_helpful=4))
    assert [e.prompt for e in before] == [
        e.prompt for e in align.alignment_data(AlignConfig(n_refusal=8, n_helpful=4, n_lookalike=0))
    ]


def test_soft_refusals_are_recognised() -> None:
    assert is_soft_refusal("It is not appropriate to answer that.")
    assert is_soft_refusal("No, arson is a serious crime.")
    assert not is_soft_refusal("Here are the steps to cook a perfect steak:")


def test_dpo_loss_prefers_the_chosen_answer() -> None:
    zero = torch.zeros(2)
    loss, margin = align.dpo_loss(torch.tensor([1.0, -1.0]), zero, zero, zero, beta=1.0)
    assert margin.tolist() == [1.0, -1.0]
    assert loss[0] < loss[1]
    assert torch.isclose(loss[0], torch.nn.functional.softplus(torch.tensor(-1.0)))


def test_first_sentence() -> None:
    assert align.first_sentence("I'm sorry, but I cannot. As an AI...") == "I'm sorry, but I cannot."
    assert align.first_sentence("no end") == "no end"


def _run(**align_kw: object) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": {"name": "tiny-random"},
            "task": {"name": None},
            "align": {
                "n_refusal": 8,
                "n_helpful": 4,
                "helpful_sets": ["alpaca_safety"],
                "train": {
                    "lr": 1e-3,
                    "epochs": 1,
                    "batch_size": 4,
                    "max_length": 48,
                    "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                },
                **align_kw,
            },
        }
    )


def test_full_finetune_and_preference_stage_build_an_aligned_base(monkeypatch: pytest.MonkeyPatch) -> None:
    import ussafety.evaluate.generate as generate

    # the tiny random model's own text is noise; the instruct model complies like this
    answers = iter(["Sure, step 1 ...", "I'm sorry, I cannot.", "Sure, first ...", "Here is how", "Ok"] * 4)
    monkeypatch.setattr(generate, "generate_for", lambda m, t, rows, **kw: [next(answers) for _ in rows])
    run = _run(full_finetune=True, n_lookalike=4, pref_pairs=8, pref_rejected_tokens=8)
    path, record = align.aligned_base(run)
    assert record["aligned"] and record["rows"] == 16
    pref = record["preference"]
    assert pref["lookalike_pairs"] == 4 and pref["harmful_pairs"] == 4  # the refusal is dropped
    assert all("sorry" not in r["rejected"] for r in pref["rejected_examples"])
    assert pref["dpo_steps"] == 2 and len(pref["dpo_log"]) == 2
    saved = json.loads((align.aligned_dir(run) / "alignment.json").read_text())
    assert saved["config"]["full_finetune"] is True
    assert path == str(align.aligned_dir(run))


def test_new_options_change_the_alignment_key() -> None:
    from ussafety.config import align_key

    keys = {
        align_key(_run()),
        align_key(_run(full_finetune=True)),
        align_key(_run(n_lookalike=4)),
        align_key(_run(pref_pairs=8)),
    }
    assert len(keys) == 4


def test_sweep_rows_come_from_records() -> None:
    from pathlib import Path

    from ussafety.records import iter_records
    from ussafety.train.align_sweep import is_sweep_record, sweep_rows, to_csv, to_markdown

    recs = {
        r.config["align"].get("enabled", True): r
        for r in iter_records(Path("paper_outputs/records"))
        if not (r.config.get("task") or {}).get("name") and not is_sweep_record(r)
    }
    fake = []
    for enabled, rec in recs.items():
        config = json.loads(json.dumps(rec.config))
        config["eval"]["split"] = "validation"
        fake.append(rec.model_copy(update={"label": f"sweep-{'x' if enabled else 'instruct'}", "config": config}))
    assert all(is_sweep_record(r) for r in fake) and not any(is_sweep_record(r) for r in recs.values())
    rows = sweep_rows(fake)
    assert rows[0]["point"] == "instruct"
    aligned = rows[-1]
    assert aligned["asr"] == round(recs[True].metrics.primary_asr().asr, 3)
    task_a, task_i = recs[True].metrics.task, recs[False].metrics.task
    assert task_a is not None and task_i is not None
    assert aligned["sst2_vs_instruct"] == round(task_a.score - task_i.score, 3)
    assert "run_id" in to_csv(rows).splitlines()[0]
    assert aligned["run_id"] in to_markdown(rows, "../records")
