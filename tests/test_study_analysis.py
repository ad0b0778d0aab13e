"""The study analysis on synthetic records whose answers are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest
from study_fixtures import config, ones, record

from ussafety.stats import cluster_bootstrap, holm_correction, mcnemar_exact, pareto_front
from ussafety.study import analysis as sa
from ussafety.study import plots

N = 60  # harmful prompts, XSTest prompts and task items of every synthetic run


def poisoned(method: str, seed: int = 0, **params):
    return config(f"{method}_s{seed}", seed, task={"poison_ratio": 0.25},
                  method={"name": method, "params": params})


def test_mcnemar_on_a_hand_made_table_equals_scipy_exact_binomial() -> None:
    # 2x2 table: both 0: 10, both 1: 5, a only: 9 (b10), b only: 2 (b01).
    a = [0] * 10 + [1] * 5 + [1] * 9 + [0] * 2
    b = [0] * 10 + [1] * 5 + [0] * 9 + [1] * 2
    res = mcnemar_exact([bool(x) for x in a], [bool(x) for x in b])
    assert (res.b01, res.b10) == (2, 9)
    assert res.p_value == pytest.approx(binomtest(2, 11, 0.5).pvalue)
    # The same numbers through two records and the paired comparison of the analysis.
    data = sa.StudyData.from_records([record(poisoned("ewc"), a, [0] * 26, [1] * 26),
                                      record(poisoned("sft"), b, [0] * 26, [1] * 26)])
    ewc, sft = sorted(data.conditions(), key=lambda c: c.labels["method"])
    cmp = sa.paired_comparison(ewc, sft, "asr", n_boot=500)
    assert cmp["p_mcnemar"] == pytest.approx(binomtest(2, 11, 0.5).pvalue)
    assert cmp["estimate"] == pytest.approx((14 - 7) / 26)
    assert cmp["n_pairs"] == 26


def test_pareto_front_of_hand_made_points() -> None:
    cost = [0.1, 0.2, 0.2, 0.5, 0.05, float("nan")]
    benefit = [0.5, 0.9, 0.8, 0.95, 0.4, 1.0]
    # (0.2, 0.8) is dominated by (0.2, 0.9); NaN is never on the front.
    assert pareto_front(cost, benefit) == [True, True, False, True, True, False]
    assert pareto_front([0.3, 0.3], [0.7, 0.7]) == [True, True]  # ties dominate nothing


def test_cluster_bootstrap_covers_the_known_mean_and_reduces_to_the_prompt_bootstrap() -> None:
    rng = np.random.default_rng(1)
    seeds = [[rng.binomial(1, 0.3, size=400)] for _ in range(3)]
    res = cluster_bootstrap(seeds, n_boot=2000, seed=0)
    assert res.estimate == pytest.approx(np.mean([s[0].mean() for s in seeds]))
    assert res.low < 0.3 < res.high and res.high - res.low < 0.1
    assert res.p_value < 0.001                        # clearly non-zero
    zero = cluster_bootstrap([[rng.normal(0, 1, 300)]], n_boot=2000, seed=0)
    assert zero.low < 0 < zero.high and zero.p_value > 0.01
    const = cluster_bootstrap([[np.full(50, 0.25)], [np.full(30, 0.75)]], n_boot=500)
    assert const.estimate == pytest.approx(0.5)       # mean over seeds of per-seed means
    assert 0.25 <= const.low <= const.high <= 0.75    # only the seed draw varies
    two = cluster_bootstrap([[np.ones(10), np.full(10, 2.0)]], n_boot=200)
    assert two.estimate == pytest.approx(3.0) and two.low == two.high == pytest.approx(3.0)


def test_condition_table_means_over_seeds_with_intervals() -> None:
    recs = [record(poisoned("sft", 0), ones(30, N), ones(6, N), ones(48, N)),
            record(poisoned("sft", 1), ones(36, N), ones(12, N), ones(42, N)),
            record(poisoned("der", 0), ones(12, N), ones(6, N), ones(48, N))]
    table = sa.condition_table(sa.StudyData.from_records(recs), n_boot=500)
    sft = table[table.method == "sft"].iloc[0]
    assert sft.n_seeds == 2 and sft.seeds == "0,1"
    assert sft.asr == pytest.approx((0.5 + 0.6) / 2)
    assert sft.over_refusal == pytest.approx((0.1 + 0.2) / 2)
    assert sft.task_score == pytest.approx((0.8 + 0.7) / 2)
    assert sft.asr_low <= sft.asr <= sft.asr_high
    der = table[table.method == "der"].iloc[0]
    assert der.asr == pytest.approx(0.2) and der.family == "replay" and der.scenario == "poisoned"
    assert list(table.method) == ["sft", "der"]   # baseline first, then by family


def test_significance_vs_sft_is_paired_and_holm_corrected() -> None:
    base = ones(30, N)
    recs = [record(poisoned("sft"), base, ones(6, N), ones(48, N)),
            record(poisoned("ewc"), ones(20, N), ones(6, N), ones(48, N)),  # 10 fewer successes
            record(poisoned("der"), ones(29, N), ones(6, N), ones(48, N))]  # 1 fewer
    sig = sa.significance_table(sa.StudyData.from_records(recs), n_boot=1000)
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


def study_records() -> list[dict]:
    """Base ASR 0.1, benign SFT 0.5, poisoned SFT 0.8, EWC 0.5, DER 0.2 (same task score),
    a merge 0.6 with a lower task score; two seeds for the fine-tuned runs."""
    base_cfg = config("aligned", task={"name": None}, eval={"task": "sst2"})
    recs = [record(base_cfg, ones(6, N), ones(6, N), ones(30, N))]
    for seed in (0, 1):
        recs += [record(config(f"sft_benign_s{seed}", seed), ones(30, N), ones(6, N), ones(48, N)),
                 record(poisoned("sft", seed), ones(48, N), ones(6, N), ones(48, N)),
                 record(poisoned("ewc", seed), ones(30, N), ones(6, N), ones(48, N)),
                 record(poisoned("der", seed), ones(12, N), ones(6, N), ones(48, N)),
                 record(poisoned("merge_linear", seed), ones(36, N), ones(6, N), ones(40, N))]
    return recs


def test_scorecard_verdicts_on_records_with_known_answers() -> None:
    claims = sa.scorecard(sa.StudyData.from_records(study_records()), n_boot=1000)
    verdicts = {c.number: c.verdict for c in claims}
    assert verdicts[1] == sa.REPRODUCED                   # 0.5 - 0.1 on 120 pairs
    assert claims[0].rows[0]["estimate"] == pytest.approx(0.4)
    assert verdicts[2] == sa.REPRODUCED                   # 0.8 - 0.5
    assert claims[1].rows[0]["estimate"] == pytest.approx(0.3)
    assert verdicts[3] == sa.REPRODUCED                   # ewc, der, merge all below 0.8
    assert {r["comparison"] for r in claims[2].rows} == {"ewc - SFT", "der - SFT", "merge_linear - SFT"}
    assert verdicts[4] == sa.REPRODUCED                   # DER: -0.6 ASR at no task cost
    row = claims[3].rows[0]
    assert "ewc" in row["comparison"] and row["estimate"] == pytest.approx(0.3)
    assert row["der_on_pareto_front"]
    five = {r["comparison"]: r["verdict"] for r in claims[4].rows}
    assert five["ewc - SFT"] == sa.REPRODUCED              # identical task outcomes
    assert five["merge_linear - SFT"] == sa.NOT_REPRODUCED  # 8 of 60 items lost (-0.133)
    assert verdicts[5] == sa.INCONCLUSIVE                  # 2 of 3 reproduced, 1 contradicted


def test_claim_not_reproduced_and_not_measured() -> None:
    recs = [record(poisoned("sft"), ones(10, N), ones(6, N), ones(48, N)),
            record(poisoned("ewc"), ones(40, N), ones(6, N), ones(48, N))]  # EWC raises ASR
    claims = sa.scorecard(sa.StudyData.from_records(recs), n_boot=500)
    assert claims[2].verdict == sa.NOT_REPRODUCED
    assert claims[0].verdict == sa.INCONCLUSIVE and "not measured" in claims[0].why
    assert claims[3].verdict == sa.INCONCLUSIVE and not claims[3].rows   # no DER


def test_verdict_rules() -> None:
    assert sa.directional_verdict(0.2, 0.1, 0.3, 0.01, +1) == sa.REPRODUCED
    assert sa.directional_verdict(0.2, -0.1, 0.3, 0.2, +1) == sa.INCONCLUSIVE
    assert sa.directional_verdict(-0.2, -0.3, -0.1, 0.01, +1) == sa.NOT_REPRODUCED
    assert sa.directional_verdict(math.nan, 0, 0, 1, +1) == sa.INCONCLUSIVE
    assert sa.noninferiority_verdict(-0.005, 0.02) == sa.REPRODUCED
    assert sa.noninferiority_verdict(-0.05, 0.02) == sa.INCONCLUSIVE
    assert sa.noninferiority_verdict(-0.05, -0.02) == sa.NOT_REPRODUCED
    assert sa.aggregate([sa.REPRODUCED, sa.INCONCLUSIVE])[0] == sa.REPRODUCED
    assert sa.aggregate([sa.REPRODUCED, sa.NOT_REPRODUCED])[0] == sa.NOT_REPRODUCED
    assert sa.aggregate([sa.REPRODUCED, sa.INCONCLUSIVE, sa.INCONCLUSIVE])[0] == sa.INCONCLUSIVE


def test_ablation_table_reads_x_and_method_defaults() -> None:
    from ussafety.study.grid import Sweep

    recs = [record(poisoned("ewc", lam=10.0), ones(40, N), ones(6, N), ones(48, N)),
            record(poisoned("ewc"), ones(30, N), ones(6, N), ones(48, N)),
            record(poisoned("ewc", lam=1e5), ones(10, N), ones(6, N), ones(40, N))]
    tags = {r["run_id"]: (["ablations"], ["ewc_lambda"]) for r in recs}
    data = sa.StudyData.from_records(recs, tags, {"ewc_lambda": Sweep("ewc_lambda", "method.params.lam",
                                                                       "EWC lambda", True)})
    abl = sa.ablation_table(data, n_boot=200)
    assert list(abl.x) == [10.0, 1e3, 1e5]     # 1e3: EWC's default, read from the method
    assert list(abl.asr) == pytest.approx([40 / N, 30 / N, 10 / N])
    assert sa.condition_table(data, n_boot=50).empty   # ablation runs stay out of the main table


def test_outputs_tables_latex_markdown_and_figures(tmp_path) -> None:
    data = sa.StudyData.from_records(study_records(), preset="synthetic")
    out = sa.write_outputs_from(data, tmp_path, n_boot=200)
    for name in ("conditions", "significance"):
        for ext in (".csv", ".md", ".tex"):
            assert (tmp_path / "tables" / f"{name}{ext}").stat().st_size > 0
    tex = (tmp_path / "tables" / "conditions.tex").read_text()
    assert r"\toprule" in tex and r"merge\_linear" in tex and "\\\\" in tex
    md = (tmp_path / "tables" / "conditions.md").read_text()
    assert "| model |" in md and "0.800 [" in md
    for fig in ("safety_utility", "asr_vs_poison_ratio", "method_bars", "ablations"):
        for ext in (".png", ".pdf"):
            assert (tmp_path / "figures" / f"{fig}{ext}").stat().st_size > 1000, fig
    card = (tmp_path / "scorecard.md").read_text()
    assert "| 1 | Benign fine-tuning raises ASR | **reproduced** |" in card
    assert "+0.400 [" in card
    assert len(out["claims"]) == 5


def test_safety_utility_marks_the_pareto_front() -> None:
    table = sa.condition_table(sa.StudyData.from_records(study_records()), n_boot=100)
    pt = sa.pareto_table(table)
    front = pt[pt.scenario == "poisoned"].set_index("method").pareto
    assert bool(front["der"]) and not bool(front["ewc"]) and not bool(front["sft"])
    fig, paths = plots.safety_utility(table)
    assert paths == [] and len(fig.axes) >= 2      # one panel per scenario: benign, poisoned
    plots.plt.close(fig)


def test_latex_escapes_special_characters() -> None:
    assert sa.tex_escape("a_b & 50% #1 {x}") == r"a\_b \& 50\% \#1 \{x\}"
