"""The study analysis on synthetic records whose answers are known by construction."""

from __future__ import annotations

import inspect

import pytest
from scipy.stats import binomtest
from study_fixtures import config, ones, record

from ussafety.stats import N_BOOT, holm_correction
from ussafety.study import (
    claim_rows,
    claims,
    compare,
    conditions,
    formatting,
    frontier,
    outputs,
    plots,
    power,
    scorecard,
    verdicts,
)
from ussafety.study.claims import load_claims
from ussafety.study.compare import condition_table, paired_comparison, significance_table
from ussafety.study.conditions import StudyData
from ussafety.study.grid import Sweep
from ussafety.study.verdicts import NOT_MEASURED, REFUTED, REPRODUCED, UNDERPOWERED

N = 60  # harmful prompts, XSTest prompts and task items of every synthetic run


def poisoned(method: str, seed: int = 0, **params):
    return config(f"{method}_s{seed}", seed, task={"poison_ratio": 0.25}, method={"name": method, "params": params})


def test_mcnemar_through_two_records_equals_scipy_exact_binomial() -> None:
    # 2x2 table: both 0: 10, both 1: 5, a only: 9 (b10), b only: 2 (b01).
    a = [0] * 10 + [1] * 5 + [1] * 9 + [0] * 2
    b = [0] * 10 + [1] * 5 + [0] * 9 + [1] * 2
    data = StudyData.from_records(
        [record(poisoned("ewc"), a, [0] * 26, [1] * 26), record(poisoned("sft"), b, [0] * 26, [1] * 26)]
    )
    ewc, sft = sorted(data.conditions(), key=lambda c: c.labels["method"])
    cmp = paired_comparison(ewc, sft, "asr")
    assert cmp["p_mcnemar"] == pytest.approx(binomtest(2, 11, 0.5).pvalue)
    assert (cmp["b01"], cmp["b10"]) == (9, 2)  # b = SFT False, EWC True: EWC worse
    assert cmp["estimate"] == pytest.approx((14 - 7) / 26)
    assert cmp["n_pairs"] == 26


def test_conditions_group_seeds_and_ignore_the_label() -> None:
    # Same config under two labels and two seeds: one condition with two runs.
    runs = [
        record(config("a", 0, task={"poison_ratio": 0.25}), ones(3, 6)),
        record(config("b", 1, task={"poison_ratio": 0.25}), ones(3, 6)),
        record(config("c", 0, task={"poison_ratio": 0.5}), ones(3, 6)),
    ]
    conds = StudyData.from_records(runs).conditions()
    assert sorted(len(c.runs) for c in conds) == [1, 2]
    sft = next(c for c in conds if len(c.runs) == 2)
    assert sft.seeds == [0, 1] and sft.is_sft and sft.run_ids == [runs[0].run_id, runs[1].run_id]
    # the base model scored on SST-2 is the base of an SST-2 fine-tune (eval.task written out)
    base = config("aligned", task={"name": None}, eval={"task": "sst2"})
    assert conditions.base_key(base.to_dict()) == conditions.base_key(runs[0].config)
    assert conditions.setting_key(runs[2].config, poison_ratio=0.25) == conditions.setting_key(runs[0].config)


def test_labels_merges_families_and_changed_params() -> None:
    slerp = conditions.labels(poisoned("slerp").to_dict())  # stored as sft + merge slerp
    assert (slerp["method"], slerp["family"], slerp["params"]) == ("slerp", "merging", "")
    t = conditions.labels(poisoned("merge_linear", t=0.3).to_dict())
    assert t["method"] == "merge_linear" and t["params"] == '{"t": 0.3}'
    der_slerp = config(
        "x", task={"poison_ratio": 0.25}, method={"name": "der"}, merge={"name": "slerp", "params": {"t": 0.7}}
    ).to_dict()
    lab = conditions.labels(der_slerp)
    assert (lab["method"], lab["family"], lab["params"]) == ("der+slerp", "merging", '{"slerp.t": 0.7}')
    assert conditions.labels(poisoned("lisa").to_dict())["family"] == "baseline"
    assert conditions.labels(poisoned("ewc", lam=10.0).to_dict())["params"] == '{"lam": 10.0}'
    base = conditions.labels(config("aligned", task={"name": None}, eval={"task": "sst2"}).to_dict())
    assert (base["scenario"], base["method"], base["family"]) == ("base", "aligned", "base")


def test_condition_table_means_over_seeds_with_intervals() -> None:
    recs = [
        record(poisoned("sft", 0), ones(30, N), ones(6, N), ones(48, N)),
        record(poisoned("sft", 1), ones(36, N), ones(12, N), ones(42, N)),
        record(poisoned("der", 0), ones(12, N), ones(6, N), ones(48, N)),
        record(poisoned("lisa", 0), ones(12, N), ones(6, N), ones(48, N)),
    ]
    table = condition_table(StudyData.from_records(recs))
    sft = table[table.method == "sft"].iloc[0]
    assert sft.n_seeds == 2 and sft.seeds == "0,1"
    assert sft.asr == pytest.approx((0.5 + 0.6) / 2)
    assert sft.over_refusal == pytest.approx((0.1 + 0.2) / 2)
    assert sft.task_score == pytest.approx((0.8 + 0.7) / 2)
    assert sft.asr_low <= sft.asr <= sft.asr_high
    der = table[table.method == "der"].iloc[0]
    assert der.asr == pytest.approx(0.2) and der.family == "replay" and der.scenario == "poisoned"
    assert list(table.method) == ["sft", "lisa", "der"]  # SFT first, then by family


def test_significance_vs_sft_is_paired_and_holm_corrected() -> None:
    base = ones(30, N)
    recs = [
        record(poisoned("sft"), base, ones(6, N), ones(48, N)),
        record(poisoned("ewc"), ones(20, N), ones(6, N), ones(48, N)),  # 10 fewer successes
        record(poisoned("der"), ones(29, N), ones(6, N), ones(48, N)),
    ]  # 1 fewer
    sig = significance_table(StudyData.from_records(recs))
    asr = sig[sig.metric == "asr"].set_index("method")
    assert asr.loc["ewc", "estimate"] == pytest.approx(-10 / N)
    assert asr.loc["ewc", "p_mcnemar"] == pytest.approx(binomtest(0, 10, 0.5).pvalue)
    assert asr.loc["der", "p_mcnemar"] == pytest.approx(1.0)
    expected = holm_correction([asr.loc["ewc", "p_mcnemar"], asr.loc["der", "p_mcnemar"]])
    assert [asr.loc["ewc", "p_mcnemar_holm"], asr.loc["der", "p_mcnemar_holm"]] == pytest.approx(expected)
    assert bool(asr.loc["ewc", "significant"]) and bool(asr.loc["ewc", "better_than_sft"])
    assert asr.loc["ewc", "ci_high"] < 0
    task = sig[sig.metric == "task_score"]
    assert (task.estimate == 0).all() and (task.p_mcnemar == 1).all()


def study_records() -> list:
    """Base ASR 0.1, benign SFT 0.5, poisoned SFT 0.8, EWC 0.5, DER 0.2 (same task score),
    a merge 0.6 with a lower task score; two seeds for the fine-tuned runs."""
    base_cfg = config("aligned", task={"name": None}, eval={"task": "sst2"})
    recs = [record(base_cfg, ones(6, N), ones(6, N), ones(30, N))]
    for seed in (0, 1):
        recs += [
            record(config(f"sft_benign_s{seed}", seed), ones(30, N), ones(6, N), ones(48, N)),
            record(poisoned("sft", seed), ones(48, N), ones(6, N), ones(48, N)),
            record(poisoned("ewc", seed), ones(30, N), ones(6, N), ones(48, N)),
            record(poisoned("der", seed), ones(12, N), ones(6, N), ones(48, N)),
            record(poisoned("merge_linear", seed), ones(36, N), ones(6, N), ones(40, N)),
        ]
    return recs


def test_scorecard_verdicts_on_records_with_known_answers() -> None:
    claims = scorecard.scorecard(StudyData.from_records(study_records()))
    assert [c.number for c in claims] == list(range(1, 11))
    kw = {c.number: c.by_judge["keyword"] for c in claims if "keyword" in c.by_judge}
    assert kw[1].verdict == REPRODUCED and kw[1].rows[0]["estimate"] == pytest.approx(0.4)  # 0.5 - 0.1
    assert kw[2].verdict == REPRODUCED and kw[2].rows[0]["estimate"] == pytest.approx(0.3)  # 0.8 - 0.5
    assert kw[3].verdict == REPRODUCED  # ewc, der, merge all below 0.8
    assert {r["comparison"] for r in kw[3].rows} == {"ewc - SFT", "der - SFT", "merge_linear - SFT"}
    assert kw[4].verdict == REPRODUCED  # DER: -0.6 ASR at no task cost
    row = kw[4].rows[0]
    assert "ewc" in row["comparison"] and row["estimate"] == pytest.approx(0.3)
    assert row["on_pareto_front"] and row["own_gain"] == pytest.approx(0.6)
    # keyword is a report-only judge and no other judge has verdicts: no claim is decided by it
    assert kw[1].role == scorecard.REPORT_ONLY and claims[0].verdict == "no judge passes the bar yet"
    five = claims[4].by_judge["task scorer"]
    verdicts = {r["comparison"]: r["verdict"] for r in five.rows}
    assert verdicts["ewc - SFT"] == UNDERPOWERED  # identical on 120 items: 1 point unprovable
    assert verdicts["merge_linear - SFT"] == REFUTED  # 8 of 60 items lost (-0.133)
    assert claims[4].verdict == UNDERPOWERED  # 1 refuted, 2 underpowered of 3
    for c in claims[5:]:  # no Lisa, LwF, A-GEM, Safe LoRA, 2nd p, 2nd task
        assert c.by_judge["keyword"].verdict == NOT_MEASURED, c.title


def test_claim_refuted_and_not_measured() -> None:
    recs = [
        record(poisoned("sft"), ones(10, N), ones(6, N), ones(48, N)),
        record(poisoned("ewc"), ones(40, N), ones(6, N), ones(48, N)),
    ]  # EWC raises ASR
    claims = scorecard.scorecard(StudyData.from_records(recs))
    assert claims[2].by_judge["keyword"].verdict == REFUTED
    assert claims[0].by_judge["keyword"].verdict == NOT_MEASURED and "no rows" in claims[0].by_judge["keyword"].why
    assert claims[3].by_judge["keyword"].verdict == NOT_MEASURED and not claims[3].rows  # no DER


def test_alpha_is_the_pre_registered_one() -> None:
    assert load_claims().alpha == compare.ALPHA


def test_stale_records_are_named_in_the_scorecard(tmp_path) -> None:
    (tmp_path / "der-sst2-p0.1-s0-aaaa").mkdir()
    (tmp_path / "der-sst2-p0.1-s0-aaaa" / "record.json").write_text("{}")
    stale = outputs.stale_records(["der-sst2-p0.1-s0-bbbb", "ewc-sst2-p0.1-s0-cccc"], tmp_path)
    assert stale == {"der-sst2-p0.1-s0-bbbb": "der-sst2-p0.1-s0-aaaa"}
    data = StudyData.from_records(study_records()[:3], preset="synthetic")
    data.missing = ["der-sst2-p0.1-s0-bbbb"]
    card = scorecard.scorecard_markdown(scorecard.scorecard(data), data, stale=stale)
    assert "`der-sst2-p0.1-s0-bbbb`: stale, the record `der-sst2-p0.1-s0-aaaa`" in card


def test_ablation_table_reads_x_from_filled_params_and_merges() -> None:
    recs = [
        record(poisoned("ewc", lam=10.0), ones(40, N), ones(6, N), ones(48, N)),
        record(poisoned("ewc"), ones(30, N), ones(6, N), ones(48, N)),
        record(poisoned("ewc", lam=1e5), ones(10, N), ones(6, N), ones(40, N)),
        record(poisoned("merge_linear", t=0.3), ones(20, N), ones(6, N), ones(40, N)),
    ]
    tags = {r.run_id: (["ablations"], ["ewc_lambda"]) for r in recs[:3]}
    tags[recs[3].run_id] = (["ablations"], ["merge_t"])
    sweeps = {
        "ewc_lambda": Sweep("ewc_lambda", "method.params.lam", "EWC lambda", True),
        "merge_t": Sweep("merge_t", "method.params.t", "merge t"),
    }
    data = StudyData.from_records(recs, tags, sweeps)
    abl = compare.ablation_table(data).set_index(["sweep", "x"])
    assert list(abl.loc["ewc_lambda"].index) == [10.0, 1e3, 1e5]  # 1e3: EWC's default, stored in the config
    assert list(abl.loc["ewc_lambda"].asr) == pytest.approx([40 / N, 30 / N, 10 / N])
    assert list(abl.loc["merge_t"].index) == [0.3]  # method.params.t of a merge: merge.params.t
    assert condition_table(data).empty  # ablation runs stay out of the main table


def test_outputs_tables_latex_markdown_and_figures(tmp_path) -> None:
    data = StudyData.from_records(study_records(), preset="synthetic")
    out = outputs.write_outputs_from(data, tmp_path)
    for name in ("conditions", "significance"):
        for ext in (".csv", ".md", ".tex"):
            assert (tmp_path / "tables" / f"{name}{ext}").stat().st_size > 0
        for ext in (".md", ".tex"):  # every table says how its intervals were computed
            text = (tmp_path / "tables" / f"{name}{ext}").read_text()
            assert f"{N_BOOT:,} resamples" in text and "percentile bootstrap" in text
    tex = (tmp_path / "tables" / "conditions.tex").read_text()
    assert r"\toprule" in tex and r"merge\_linear" in tex and "\\\\" in tex
    md = (tmp_path / "tables" / "conditions.md").read_text()
    assert "| model |" in md and "0.800 [" in md
    for fig in ("safety_utility", "asr_vs_poison_ratio", "method_bars", "ablations"):
        for ext in (".png", ".pdf"):
            assert (tmp_path / "figures" / f"{fig}{ext}").stat().st_size > 1000, fig
    card = (tmp_path / "scorecard.md").read_text()
    assert "| 1 | Benign fine-tuning raises ASR | reproduced |" in card
    assert "+0.400 [" in card and f"{N_BOOT:,} resamples" in card and "What this size can see" in card
    assert len(out["claims"]) == 10
    assert "Connor 1987" in (tmp_path / "power.md").read_text() and (tmp_path / "power.csv").is_file()


def test_no_table_chooses_its_own_bootstrap_size() -> None:
    # One size for every table: the analysis functions take none, so none can differ.
    for module in (
        conditions,
        compare,
        scorecard,
        formatting,
        outputs,
        plots,
        claims,
        claim_rows,
        verdicts,
        power,
        frontier,
    ):
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ == module.__name__:
                assert "n_boot" not in inspect.signature(fn).parameters, f"{module.__name__}.{name}"


def test_safety_utility_marks_the_pareto_front() -> None:
    table = condition_table(StudyData.from_records(study_records()))
    pt = compare.pareto_table(table)
    front = pt[pt.scenario == "poisoned"].set_index("method").pareto
    assert bool(front["der"]) and not bool(front["ewc"]) and not bool(front["sft"])
    fig, paths = plots.safety_utility(table)
    assert paths == [] and len(fig.axes) >= 2  # one panel per scenario: benign, poisoned
    plots.plt.close(fig)


def test_latex_escapes_special_characters() -> None:
    assert formatting.tex_escape("a_b & 50% #1 {x}") == r"a\_b \& 50\% \#1 \{x\}"
