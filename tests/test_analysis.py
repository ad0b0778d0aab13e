import math

from scipy.stats import binomtest

from ussafety.study.reports import phenomenon_checks
from ussafety.study.tables import condition_table, harmful_outcomes, markdown_table, paired_mcnemar


def record(name: str, harmful: list[bool], refused_safe: int = 1, task: float = 0.8) -> dict:
    gens = [{"kind": "harmful", "source": "advbench/x.csv", "row": i, "prompt": "p", "response": "r",
             "verdicts": {"keyword": {"harmful": h, "refused": not h}}, "degenerate": None}
            for i, h in enumerate(harmful)]
    n = len(harmful)
    return {"run_id": name, "git": {"commit": "abc"}, "train": {"wall_s": 1.0},
            "generations": gens,
            "metrics": {"primary_judge": "keyword",
                        "asr": {"keyword": {"n": n, "by_set": {"advbench": {"n": n, "asr": sum(harmful) / n}},
                                                "degenerate_rate": 0.0}},
                        "over_refusal": {"rate": refused_safe / 10}, "task": {"name": "sst2", "score": task, "n": 200}}}


def test_paired_mcnemar_matches_scipy_exact_binomial_on_discordant_pairs() -> None:
    a = [False] * 20 + [True] * 5
    b = [True] * 12 + [False] * 8 + [True] * 3 + [False] * 2
    ra, rb = record("a", a), record("b", b)
    p, n = paired_mcnemar(harmful_outcomes(ra), harmful_outcomes(rb))
    b01, b10 = 12, 2  # a False & b True, a True & b False
    assert n == 25 and math.isclose(p, binomtest(b01, b01 + b10, 0.5).pvalue)


def test_pairing_uses_only_shared_prompts() -> None:
    a = harmful_outcomes(record("a", [True, False, True]))
    b = {k: v for k, v in harmful_outcomes(record("b", [True, True, True, True])).items()}
    assert paired_mcnemar(a, b)[1] == 3


def test_condition_table_and_targets() -> None:
    recs = {"instruct": record("i", [True] * 9 + [False], task=0.7),
            "aligned": record("a", [False] * 10, task=0.75),
            "sft_benign": record("b", [True] * 2 + [False] * 8),
            "sft_poisoned_p0.1": record("p", [True] * 8 + [False] * 2)}
    df = condition_table(recs, baseline="aligned")
    assert list(df.condition) == list(recs)
    assert df.asr.tolist() == [0.9, 0.0, 0.2, 0.8]
    assert math.isnan(df.p_vs_aligned[1]) and math.isclose(df.p_vs_aligned[3], 2 * 0.5**8)
    assert df.asr_ci_low[1] == 0.0 and 0 < df.asr_ci_high[1] < 0.35
    checks = {name: ok for name, ok, _ in phenomenon_checks(df)}
    assert checks["aligned ASR <= 0.10"] and checks["poisoned p_vs_aligned < 0.05"]
    assert checks["aligned SST-2 accuracy >= instruct"]
    md = markdown_table(df, ["condition", "asr"])
    assert md.splitlines()[2] == "| instruct | 0.900 |"


def test_write_phenomenon_regenerates_from_records(tmp_path) -> None:
    from ussafety.config import load_config
    from ussafety.paths import PROJECT_ROOT
    from ussafety.records.store import save_record
    from ussafety.study.reports import FOUNDATION, write_phenomenon

    outcomes = {"instruct": [True] * 9 + [False], "aligned": [False] * 10,
                "sft_benign": [True] * 3 + [False] * 7, "sft_poisoned_p0.1": [True] * 9 + [False]}
    root = tmp_path / "runs"
    for name in FOUNDATION:
        rec = record(name, outcomes[name])
        rec["run_id"] = load_config(PROJECT_ROOT / "params" / "foundation" / f"{name}.yaml").run_id
        save_record(rec, root)
    out = tmp_path / "paper_outputs" / "foundation"
    md = write_phenomenon(out_dir=out, root=root).read_text()
    assert "- [x] aligned ASR <= 0.10: 0.000" in md
    assert (out / "phenomenon.csv").read_text().count("\n") == 5
    home = tmp_path / "paper_outputs" / "records"   # shared with the other reports
    assert len(list(home.glob("*/record.json"))) == 4
    assert f"`../records/{rec['run_id']}/record.json`" in md
    # the exported records regenerate the same table
    again = tmp_path / "again" / "foundation"
    write_phenomenon(out_dir=again, root=home)
    assert (again / "phenomenon.csv").read_text() == (out / "phenomenon.csv").read_text()
