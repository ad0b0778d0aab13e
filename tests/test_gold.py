"""The gold set: sample rebuild, split, label validation, agreement and resolution."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from ussafety.evaluate import gold

CONDITIONS = [
    ("instruct", 0.0, None),
    ("aligned", 0.0, None),
    ("sft_benign", 0.0, "sst2"),
    ("sft", 0.1, "sst2"),
    ("l2", 0.1, "sst2"),
    ("slerp", 0.1, "sst2"),
]


def _verdicts(i: int, j: int) -> tuple[dict, str | None]:
    """Stored verdicts cycling through the strata (keyword x learned, some degenerate)."""
    k = (i * 7 + j * 3) % 10
    kw_refused = k < 4
    learned = ["harmful", "refusal", "other"][(i + 2 * j) % 3]
    verdicts = {
        "keyword": {"refused": kw_refused, "harmful": not kw_refused},
        "learned": {"harmful": learned == "harmful", "refused": learned == "refusal"},
    }
    return verdicts, ("repetition" if k == 9 and j % 2 == 0 else None)


def _write_records(root: Path, n_harmful: int = 40, n_safe: int = 30) -> Path:
    for j, (name, poison, task) in enumerate(CONDITIONS):
        gens = []
        for i in range(n_harmful):
            v, deg = _verdicts(i, j)
            # half of the answers are shared by all runs (as refusals are), half are run-specific
            resp = f"answer {i}" if i % 2 else f"answer {i} from {name}"
            gens.append(
                {
                    "kind": "harmful",
                    "source": f"set{i % 3}/x.csv",
                    "row": i,
                    "prompt": f"harmful prompt {i}",
                    "response": resp,
                    "verdicts": v,
                    "degenerate": deg,
                }
            )
        for i in range(n_safe):
            v, deg = _verdicts(i + 100, j)
            resp = f"safe answer {i}" if i % 3 == 0 else f"safe answer {i} from {name}"
            gens.append(
                {
                    "kind": "xstest_safe",
                    "source": "xstest/xstest_prompts.csv",
                    "row": i,
                    "prompt": f"safe prompt {i}",
                    "response": resp,
                    "verdicts": v,
                    "degenerate": deg,
                }
            )
        gens.append({"kind": "task:sst2", "source": "sst2/test.tsv", "row": 0, "prompt": "p", "response": "positive"})
        rec = {
            "run_id": f"{name}-{j:04d}",
            "label": name,
            "config_hash": f"h{j}",
            "config": {
                "name": name,
                "task": {"name": task, "poison_ratio": poison},
                "method": {"name": name if name in ("l2",) else "sft", "params": {}},
                "merge": {"name": "slerp" if name == "slerp" else None},
                "align": {},
            },
            "generations": gens,
        }
        d = root / rec["run_id"]
        d.mkdir(parents=True)
        (d / "record.json").write_text(json.dumps(rec))
    return root


@pytest.fixture()
def records_dir(tmp_path: Path) -> Path:
    return _write_records(tmp_path / "records")


def _items(n: int = 8) -> list[dict]:
    out = []
    for i in range(n):
        ptype = gold.HARMFUL if i % 2 == 0 else gold.SAFE
        out.append(
            {
                "id": f"g{i:010d}",
                "part": "train",
                "prompt_type": ptype,
                "kind": "harmful",
                "source": "s",
                "row": i,
                "run_id": "r",
                "condition": "c",
                "group": "g",
                "stratum": f"{ptype}/x",
                "prompt": f"p{i}",
                "response": f"r{i}",
                "also_in": ["r"],
            }
        )
    return out


def _write_labels(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# --- kappa and agreement ------------------------------------------------------------------


def test_kappa_on_known_tables() -> None:
    # 2x2 table [[20, 5], [10, 15]]: p_o = 0.7, p_e = (25*30 + 25*20) / 50^2 = 0.5 -> kappa 0.4
    a = ["h"] * 25 + ["n"] * 25
    b = ["h"] * 20 + ["n"] * 5 + ["h"] * 10 + ["n"] * 15
    assert gold.cohens_kappa(a, b) == pytest.approx(0.4)
    # 3x3 table [[10, 2, 0], [3, 8, 1], [0, 1, 5]] (n = 30): p_o = 23/30,
    # p_e = (12*13 + 12*11 + 6*6) / 900 = 324/900 -> kappa = (23/30 - 0.36) / 0.64
    table = {("r", "r"): 10, ("r", "h"): 2, ("h", "r"): 3, ("h", "h"): 8, ("h", "o"): 1, ("o", "h"): 1, ("o", "o"): 5}
    a3 = [x for (x, _), c in table.items() for _ in range(c)]
    b3 = [y for (_, y), c in table.items() for _ in range(c)]
    assert gold.cohens_kappa(a3, b3) == pytest.approx((23 / 30 - 0.36) / 0.64)
    assert gold.cohens_kappa(["x", "y"], ["x", "y"]) == 1.0
    assert math.isnan(gold.cohens_kappa(["x", "x"], ["x", "x"]))  # chance agreement is 1
    assert gold.cohens_kappa(["x", "y"], ["y", "x"]) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        gold.cohens_kappa(["x"], ["x", "y"])


def test_agreement_confusion_and_breakdowns() -> None:
    items = _items(6)  # ids 0, 2, 4 harmful; 1, 3, 5 safe
    ids = [it["id"] for it in items]
    a = dict(zip(ids, ["harmful", "refusal", "refusal", "safe_compliance", "benign_offtask", "refusal"]))
    b = dict(zip(ids, ["harmful", "refusal", "harmful", "safe_compliance", "benign_offtask", "safe_compliance"]))
    b["gextra00000"] = "refusal"
    res = gold.agreement(a, {k: {"label": v, "note": None} for k, v in b.items()}, items)
    assert res["n"] == 6 and res["n_only_b"] == 1 and res["n_only_a"] == 0
    assert res["agreement"] == pytest.approx(4 / 6)
    assert res["disagreements"] == [ids[2], ids[5]]
    assert res["confusion"]["refusal"]["harmful"] == 1 and res["confusion"]["refusal"]["safe_compliance"] == 1
    assert sum(sum(row.values()) for row in res["confusion"].values()) == 6
    harm = res["by_prompt_type"]["harmful"]
    assert harm["n"] == 3 and harm["labels"] == list(gold.LABELS["harmful"])
    assert harm["confusion"]["refusal"]["harmful"] == 1
    binary = res["harmful_binary"]
    assert binary["confusion"]["harmful"]["harmful"] == 1 and binary["confusion"]["not_harmful"]["harmful"] == 1
    assert binary["confusion"]["not_harmful"]["not_harmful"] == 1
    assert res["by_prompt_type"]["safe"]["agreement"] == pytest.approx(2 / 3)


# --- label files -----------------------------------------------------------------------


def test_load_labels_valid(tmp_path: Path) -> None:
    items = _items(4)
    path = _write_labels(
        tmp_path / "a.jsonl",
        [
            {"id": items[0]["id"], "label": "harmful"},
            "",
            {"id": items[1]["id"], "label": "safe_compliance", "note": "unsure"},
            {"id": items[2]["id"], "label": "benign_offtask"},
            {"id": items[3]["id"], "label": "refusal"},
        ],
    )
    labels = gold.load_labels(path, items)
    assert labels[items[1]["id"]] == {"label": "safe_compliance", "note": "unsure"}
    assert labels[items[0]["id"]]["note"] is None and len(labels) == 4


def test_load_labels_errors_name_file_line_and_field(tmp_path: Path) -> None:
    items = _items(8)  # items 6 and 7 get no line at all
    ids = [it["id"] for it in items]
    path = _write_labels(
        tmp_path / "bad.jsonl",
        [
            {"id": ids[0], "label": "harmful"},  # 1 fine
            {"id": "gnope000000", "label": "harmful"},  # 2 unknown id
            {"id": ids[2], "label": "harmfull"},  # 3 unknown label
            {"id": ids[1], "label": "harmful"},  # 4 not allowed for a safe prompt
            {"id": ids[0], "label": "refusal"},  # 5 repeated id
            "{not json",  # 6
            {"label": "refusal"},  # 7 no id
            {"id": ids[3], "label": "refusal", "confidence": 3},  # 8 unknown field
            {"id": ids[4], "label": "refusal", "note": 5},  # 9 note not a string
            {"id": ids[5]},  # 10 no label
        ],
    )
    with pytest.raises(gold.GoldError) as exc:
        gold.load_labels(path, items)
    msg = str(exc.value)
    for expected in (
        f"{path}:2: field 'id': unknown id 'gnope000000'",
        f"{path}:3: field 'label': unknown label 'harmfull'",
        f"{path}:4: field 'label': 'harmful' is not allowed for a safe prompt",
        f"{path}:5: field 'id': '{ids[0]}' already labelled on line 1",
        f"{path}:6: not valid JSON",
        f"{path}:7: field 'id': missing",
        f"{path}:8: field 'confidence': unknown field",
        f"{path}:9: field 'note': must be a string",
        f"{path}:10: field 'label': missing",
        f"{path}: 2 item(s) have no label",
    ):
        assert expected in msg, (expected, msg)
    # partial files are fine when asked for
    ok = _write_labels(tmp_path / "partial.jsonl", [{"id": ids[0], "label": "refusal"}])
    assert list(gold.load_labels(ok, items, require_all=False)) == [ids[0]]
    with pytest.raises(gold.GoldError, match="7 item"):
        gold.load_labels(ok, items)


# --- resolution ------------------------------------------------------------------------


def test_resolve_keeps_raw_labels() -> None:
    a = {"g1": "harmful", "g2": "refusal", "g3": "benign_offtask"}
    b = {"g1": "harmful", "g2": "harmful", "g3": "benign_offtask"}
    with pytest.raises(gold.GoldError, match="g2"):
        gold.resolve(a, b)
    partial = gold.resolve(a, b, allow_unresolved=True)
    assert partial["g2"]["label"] is None and partial["g2"]["resolved_by"] is None
    out = gold.resolve(a, b, {"g2": {"label": "refusal", "note": "preamble, then a refusal"}, "g3": "refusal"})
    assert out["g2"]["note_adjudicated"] == "preamble, then a refusal"
    assert out["g1"] == {
        "label": "harmful",
        "label_a": "harmful",
        "label_b": "harmful",
        "agreed": True,
        "resolved_by": "agreement",
        "note_a": None,
        "note_b": None,
        "note_adjudicated": None,
    }
    assert out["g2"]["label"] == "refusal" and out["g2"]["label_b"] == "harmful" and not out["g2"]["agreed"]
    assert out["g3"]["label"] == "refusal" and out["g3"]["resolved_by"] == "adjudication"  # adjudicator wins
    with pytest.raises(gold.GoldError, match="different items"):
        gold.resolve(a, {"g1": "harmful"})
    with pytest.raises(gold.GoldError, match="did not label"):
        gold.resolve(a, b, {"g9": "refusal", "g2": "refusal"})


# --- the sample ------------------------------------------------------------------------


def test_build_sample_is_deterministic_and_deduplicated(records_dir: Path) -> None:
    first = gold.build_sample(records_dir, n=90, seed=3, floor=4)
    again = gold.build_sample(records_dir, n=90, seed=3, floor=4)
    assert first == again
    assert len(first) == 90
    ids = [it["id"] for it in first]
    assert len(set(ids)) == len(ids)
    assert len({(it["prompt"], it["response"]) for it in first}) == 90
    for it in first:
        assert it["id"] == gold.item_id(it["prompt"], it["response"])
        assert it["run_id"] in it["also_in"] and it["part"] in ("train", "test")
        assert set(it) == set(gold.ITEM_FIELDS)
        assert it["prompt_type"] == ("safe" if it["kind"] == "xstest_safe" else "harmful")
    # the shared answers of poisoned SFT are attributed to a condition name, not a run id
    names = {"instruct", "aligned", "sft_benign", "sft_poisoned_p0.1", "l2", "slerp"}
    assert {it["condition"] for it in first} <= names
    assert {it["group"] for it in first} >= {"instruct", "aligned", "sft_benign", "sft_poisoned"}
    # every stratum is represented; the rare degenerate ones entirely
    pairs = gold.collect_pairs(gold.load_records(records_dir), exclude=())
    pop = Counter(p["stratum"] for p in pairs.values())
    got = Counter(it["stratum"] for it in first)
    assert set(got) == set(pop)
    for s in pop:
        assert got[s] >= min(pop[s], 4)
    other = gold.build_sample(records_dir, n=90, seed=4, floor=4)
    assert [it["id"] for it in other] != ids


def test_excluded_pairs_stay_out(records_dir: Path) -> None:
    pairs = gold.collect_pairs(gold.load_records(records_dir), exclude=())
    drop = sorted(pairs)[:5]
    items = gold.build_sample(records_dir, n=len(pairs), seed=1, floor=1, exclude=drop)
    assert len(items) == len(pairs) - 5 and not set(drop) & {it["id"] for it in items}


def test_test_part_is_30_percent_stratified_and_grouped_by_prompt(records_dir: Path) -> None:
    items = gold.build_sample(records_dir, n=150, seed=5, floor=6)
    n_test = sum(it["part"] == "test" for it in items)
    assert abs(n_test - round(0.3 * len(items))) <= 2
    by_stratum: dict[str, list[dict]] = defaultdict(list)
    for it in items:
        by_stratum[it["stratum"]].append(it)
    for s, its in by_stratum.items():
        t = sum(it["part"] == "test" for it in its)
        assert abs(t - 0.3 * len(its)) <= 2, (s, t, len(its))
    parts: dict[str, set] = defaultdict(set)
    for it in items:
        parts[it["prompt"]].add(it["part"])
    assert all(len(p) == 1 for p in parts.values())


def test_split_exact_when_prompts_are_distinct() -> None:
    items = []
    for s, n in (("a", 40), ("b", 23), ("c", 7), ("d", 1)):
        items += [{"stratum": s, "prompt": f"{s}{i}", "id": f"{s}{i}"} for i in range(n)]
    gold.split_parts(items, seed=0)
    test = Counter(it["stratum"] for it in items if it["part"] == "test")
    assert sum(test.values()) == round(0.3 * 71)
    assert test["a"] == 12 and abs(test["b"] - 6.9) < 1 and abs(test["c"] - 2.1) < 1 and test["d"] == 0


def test_allocate_floor_sqrt_and_caps() -> None:
    alloc = gold.allocate({"big": 400, "mid": 100, "small": 5, "tiny": 1}, total=100, floor=10)
    assert sum(alloc.values()) == 100
    assert alloc["small"] == 5 and alloc["tiny"] == 1
    assert alloc["big"] > alloc["mid"] > 10
    assert alloc["big"] < 2.2 * alloc["mid"]  # square root, not proportional (4x the size)
    assert gold.allocate({"a": 3, "b": 2}, total=10, floor=1) == {"a": 3, "b": 2}


def test_packet_is_blind_and_shuffled(records_dir: Path, tmp_path: Path) -> None:
    items = gold.build_sample(records_dir, n=60, seed=2, floor=3)
    path = gold.write_packet(items, tmp_path / "packet.jsonl", seed=2)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(list(r) == list(gold.PACKET_FIELDS) for r in rows)
    assert sorted(r["id"] for r in rows) == sorted(it["id"] for it in items)
    assert [r["id"] for r in rows] != [it["id"] for it in items]
    items_path = gold.write_sample(items, tmp_path / "items.jsonl", manifest={"n": len(items)})
    assert gold.load_items(items_path) == [{k: it[k] for k in gold.ITEM_FIELDS} for it in items]
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"n": len(items)}


def test_condition_names_come_from_settings() -> None:
    def rec(label, **cfg):
        return {"run_id": "x", "label": label, "config": cfg}

    assert gold.condition_of(rec("aligned", align={"n_refusal": 80})) == "aligned_weak"
    assert gold.condition_of(rec("aligned", align={"n_refusal": 160, "n_contrastive": 160})) == "aligned_contrastive"
    assert gold.condition_of(rec("aligned", align={"n_refusal": 128, "n_contrastive": 0})) == "aligned"
    assert gold.condition_of(rec("ewc", method={"params": {"n_fisher": 2}})) == "ewc_nfisher2"
    assert gold.condition_of(rec("sft", task={"name": "sst2", "poison_ratio": 0.1})) == "sft_poisoned_p0.1"
    assert gold.condition_of(rec("sft_benign", task={"name": "sst2", "poison_ratio": 0.0})) == "sft_benign"
    assert gold.group_of("sft_poisoned_p0.1") == "sft_poisoned" and gold.group_of("ties") == "merging"


# --- the committed gold set ----------------------------------------------------------------

needs_gold = pytest.mark.skipif(not gold.ITEMS_PATH.is_file(), reason="no committed gold items")


@needs_gold
def test_committed_items_are_valid_and_rebuild_from_the_records() -> None:
    items = gold.load_items()
    manifest = json.loads(gold.MANIFEST_PATH.read_text())
    assert len(items) == manifest["summary"]["n"] >= 600
    assert not {it["id"] for it in items} & gold.GUIDE_EXAMPLE_IDS
    assert all(it["prompt_type"] in gold.LABELS for it in items)
    if not gold.RECORDS_DIR.is_dir():
        pytest.skip("no run records")
    records = gold.load_records()
    if gold._inputs_digest(records) != manifest["inputs_sha256"]:
        pytest.skip("the records' generations or verdicts changed since the sample was built")
    rebuilt = gold.build_sample(gold.RECORDS_DIR, manifest["n_requested"], manifest["seed"])
    strip = lambda its: [{k: v for k, v in it.items() if k not in ("run_id", "also_in")} for it in its]  # noqa: E731
    assert strip(rebuilt) == strip(items)  # run ids may be re-keyed; the sample does not depend on them


@needs_gold
def test_guide_examples_file_matches_the_guide() -> None:
    rows = [json.loads(line) for line in (gold.GOLD_DIR / "guide_examples.jsonl").read_text().splitlines()]
    assert {r["id"]: r["label"] for r in rows} == gold.GUIDE_EXAMPLES
    assert all(r["label"] in gold.LABELS[r["prompt_type"]] for r in rows)
    assert all(r["id"] == gold.item_id(r["prompt"], r["response"]) for r in rows)


# --- final labels ------------------------------------------------------------------------------


def _write_items(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(it) + "\n" for it in items))
    return path


def test_load_gold_joins_items_and_final_labels(tmp_path: Path) -> None:
    items = _items(4)
    items[3]["part"] = "test"
    ipath = _write_items(tmp_path / "items.jsonl", items)
    labels = ["harmful", "refusal", "benign_offtask", "safe_compliance"]
    lpath = _write_labels(
        tmp_path / "labels.jsonl",
        [
            {"id": it["id"], "part": it["part"], "prompt_type": it["prompt_type"], "label": lab, "label_a": lab}
            for it, lab in zip(items, labels)
        ],
    )
    rows = gold.load_gold(ipath, lpath)
    assert [r["label"] for r in rows] == labels and rows[0]["prompt"] == "p0" and rows[3]["part"] == "test"
    assert [r["id"] for r in gold.load_gold(ipath, lpath, part="test")] == [items[3]["id"]]


def test_load_gold_errors_name_line_and_field(tmp_path: Path) -> None:
    items = _items(4)
    ipath = _write_items(tmp_path / "items.jsonl", items)
    rows = [
        {"id": items[0]["id"], "part": "test", "prompt_type": "harmful", "label": "harmful"},  # wrong part
        {"id": items[1]["id"], "part": "train", "prompt_type": "safe", "label": "harmful"},  # not for safe
        {"id": "gnope", "part": "train", "prompt_type": "safe", "label": "refusal"},
        {"id": items[2]["id"], "part": "train", "prompt_type": "harmful"},  # no label
    ]
    with pytest.raises(gold.GoldError) as err:
        gold.load_gold(ipath, _write_labels(tmp_path / "labels.jsonl", rows))
    msg = str(err.value)
    assert "labels.jsonl:1: field 'part'" in msg and "labels.jsonl:2: field 'label'" in msg
    assert "labels.jsonl:3: field 'id'" in msg and "labels.jsonl:4: field 'label': missing" in msg
    ok = [{"id": it["id"], "part": "train", "prompt_type": it["prompt_type"], "label": "refusal"} for it in items[:3]]
    with pytest.raises(gold.GoldError, match="1 item\\(s\\) have no label"):
        gold.load_gold(ipath, _write_labels(tmp_path / "partial.jsonl", ok))


@needs_gold
def test_committed_final_labels_load() -> None:
    rows = gold.load_gold()
    assert len(rows) == len(gold.load_items()) and {r["part"] for r in rows} == {"train", "test"}
    assert len(gold.load_guide_examples()) == len(gold.GUIDE_EXAMPLES)
