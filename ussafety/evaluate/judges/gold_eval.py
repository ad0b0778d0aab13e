"""How accurate is each judge: every judge scored against the hand-labelled gold set.

Why: ASR is only as true as the judge that counts it, and the judges disagree. The gold
set (``paper_outputs/judges/gold``, :mod:`ussafety.evaluate.gold`) holds 660 answers from
the run records, each labelled by two blind readers (disagreements adjudicated) with the
three-way labels of ``docs/labelling.md``. Its ``test`` part (30%, grouped by prompt) was
used by no judge's design or training; the ``train`` part shaped ``keyword3`` and trained
``learned3``, so its numbers are reported for reference only.

Per judge and part (:func:`part_metrics`):

* ``accuracy`` (Wilson 95%) and Cohen's ``kappa`` against the gold labels over every item
  of the part (harmful and safe prompts, the labels as given; an undecided verdict is its
  own category), with a percentile bootstrap interval;
* on the harmful prompts, the harmful class: ``precision`` and ``recall`` (Wilson), the ASR
  the judge would report vs the gold ASR (Wilson each) and their difference ``asr_gap``
  with a paired bootstrap interval, and the refusal and off-task rates vs gold;
* on the safe prompts, the refusal rate (over-refusal) and off-task rate vs gold.

Intervals: Wilson 95% for proportions (:func:`ussafety.stats.wilson_interval`); for kappa a
95% percentile bootstrap over items (:data:`N_BOOT` resamples, seed :data:`SEED`, kappa by
:func:`ussafety.stats.cohens_kappa`); for the ASR gap the project's paired bootstrap
(:func:`ussafety.stats.paired_bootstrap_diff`). Items are resampled one by one although
several answers share a prompt, so the intervals are somewhat narrow.

The bar (issue 17): ``kappa >= 0.8`` and ``|asr_gap| <= 0.03`` on the test part.

Sources of verdicts: live judges are run on the items (``keyword_gcg``, ``keyword3``,
``learned3`` and any LLM judge given as ``name=<folder>``); ``learned`` (the original head,
whose artefact is not kept) is read from the verdicts stored in the run records the items
came from (each item's ``run_id``, else any run in ``also_in``).

``python -m ussafety.evaluate.judges.gold_eval`` writes ``paper_outputs/judges/gold_accuracy.{csv,md}``.
The metrics live in :mod:`~ussafety.evaluate.judges.gold_metrics`, the markdown in
:mod:`~ussafety.evaluate.judges.gold_report`; this module gathers the verdicts, writes both
files and re-exports the names of the other two.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ussafety.atomic import write_text_atomic
from ussafety.evaluate.gold import GOLD_DIR, ITEMS_PATH, LABELS_PATH, RECORDS_DIR, load_gold, load_items
from ussafety.evaluate.judges.base import Judge, judge_pairs, label_from_flags
from ussafety.evaluate.judges.gold_metrics import (
    ASR_GAP_BAR,
    COLUMNS,
    KAPPA_BAR,
    PARTS,
    SEED,
    UNDECIDED,
    accuracy_rows,
    kappa_interval,
    part_metrics,
    readers_kappa,
)
from ussafety.evaluate.judges.gold_report import learned3_meta, learned3_section, render_markdown
from ussafety.stats import N_BOOT

__all__ = [
    "ASR_GAP_BAR",
    "COLUMNS",
    "KAPPA_BAR",
    "LIVE_JUDGES",
    "NOTES_PATH",
    "OUT_DIR",
    "PARTS",
    "SEED",
    "STORED_JUDGES",
    "UNDECIDED",
    "accuracy_rows",
    "current_run_id",
    "gold_labels",
    "judge_labels",
    "kappa_interval",
    "learned3_meta",
    "learned3_section",
    "main",
    "part_metrics",
    "readers_kappa",
    "render_markdown",
    "stored_labels",
    "write_gold_accuracy",
]

OUT_DIR = GOLD_DIR.parent
#: Hand-written notes appended to the generated table (design history and reading); not generated.
NOTES_PATH = OUT_DIR / "gold_accuracy_notes.md"
LIVE_JUDGES = ("keyword_gcg", "keyword3", "learned3")
STORED_JUDGES = ("learned",)


# --- verdicts ---------------------------------------------------------------------------


def judge_labels(judge: Judge, rows: Sequence[dict[str, Any]]) -> list[str | None]:
    """The judge's three-way label for each gold row (None: undecided)."""
    verdicts = judge_pairs(
        judge, [r["prompt"] for r in rows], [r["response"] for r in rows], [r["prompt_type"] for r in rows]
    )
    return [v.label for v in verdicts]


def current_run_id(run_id: str, records_dir: Path | str = RECORDS_DIR) -> str:
    """``run_id`` after the re-keyings logged in ``<records_dir>/MIGRATION.json`` (followed in
    order, so a record moved twice is found), or ``run_id`` itself."""
    log = Path(records_dir) / "MIGRATION.json"
    moved = json.loads(log.read_text(encoding="utf-8")).get("moved", {}) if log.is_file() else {}
    seen = {run_id}
    while run_id in moved and moved[run_id] not in seen:
        run_id = moved[run_id]
        seen.add(run_id)
    return run_id


def stored_labels(
    judge: str,
    rows: Sequence[dict[str, Any]],
    records_dir: Path | str = RECORDS_DIR,
    items_path: Path | str = ITEMS_PATH,
) -> list[str | None]:
    """Labels from the verdicts ``judge`` left in the run records for each gold row's pair.

    Each item names its run (``run_id``) and every run that produced the same pair
    (``also_in``), under the ids they had when the sample was built; they are followed
    through ``MIGRATION.json`` and the first with a verdict by ``judge`` is read, else any
    record holding the pair (run-id order). Stored verdicts without a label are labelled
    from their flags (:func:`label_from_flags`). None where no record has one.
    """
    items = {it["id"]: it for it in load_items(items_path)}
    index: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}  # pair -> run id -> verdict
    for path in sorted(Path(records_dir).glob("*/record.json")):
        for g in json.loads(path.read_text(encoding="utf-8")).get("generations", []):
            v = (g.get("verdicts") or {}).get(judge)
            if v is not None:
                index.setdefault((g["prompt"], g["response"]), {}).setdefault(path.parent.name, v)
    out: list[str | None] = []
    for r in rows:
        item = items[r["id"]]
        found = index.get((r["prompt"], r["response"]), {})
        runs = [current_run_id(x, records_dir) for x in [item["run_id"], *item["also_in"]]]
        v = next((found[x] for x in runs if x in found), None) or next(iter(found.values()), None)
        out.append(
            None
            if v is None
            else v.get("label") or label_from_flags(v.get("harmful"), v.get("refused"), r["prompt_type"])
        )
    return out


def gold_labels(
    specs: Sequence[str],
    stored: Sequence[str],
    rows: Sequence[dict[str, Any]],
    records_dir: Path | str = RECORDS_DIR,
    items_path: Path | str = ITEMS_PATH,
) -> tuple[dict[str, list[str | None]], dict[str, str]]:
    """Each judge's label per gold row, and where its verdicts come from."""
    from ussafety.evaluate.judges.registry import get_judge

    labels: dict[str, list[str | None]] = {}
    sources: dict[str, str] = {}
    for spec in specs:
        judge = get_judge(spec)
        labels[judge.name] = judge_labels(judge, rows)
        sources[judge.name] = f"run now on the items (`{spec.split('=')[0]}`)"
    for name in stored:
        labels[name] = stored_labels(name, rows, records_dir, items_path)
        sources[name] = "verdicts stored in the run records (the original head; its artefact is not kept)"
    return labels, sources


def write_gold_accuracy(
    specs: Sequence[str] = LIVE_JUDGES,
    stored: Sequence[str] = STORED_JUDGES,
    out_dir: Path | None = None,
    records_dir: Path | str = RECORDS_DIR,
    notes: Sequence[str] = (),
    n_boot: int = N_BOOT,
    items_path: Path | str = ITEMS_PATH,
    labels_path: Path | str = LABELS_PATH,
) -> Path:
    """Judge the gold items with each spec (and read ``stored`` judges from the records);
    write ``gold_accuracy.csv`` and ``gold_accuracy.md``; return the markdown path."""
    out_dir = out_dir or OUT_DIR
    rows = load_gold(items_path, labels_path)
    labels, sources = gold_labels(specs, stored, rows, records_dir, items_path)
    table = accuracy_rows(labels, rows, sources, n_boot)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in table:
        writer.writerow(
            {k: (f"{v:.4f}" if isinstance(v, float) and not isinstance(v, bool) else v) for k, v in r.items()}
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "gold_accuracy.csv", buf.getvalue())
    md = out_dir / "gold_accuracy.md"
    meta = learned3_meta() if "learned3" in labels else None
    write_text_atomic(md, render_markdown(table, readers_kappa(labels_path), notes, meta))
    return md


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ussafety.evaluate.judges.gold_eval", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument(
        "--judges",
        default=",".join(LIVE_JUDGES),
        help="comma-separated judge specs run on the items (LLM judges as name=<folder>)",
    )
    p.add_argument(
        "--stored", default=",".join(STORED_JUDGES), help="judges read from the verdicts stored in the run records"
    )
    p.add_argument("--out", help="output folder (default paper_outputs/judges)")
    p.add_argument(
        "--notes",
        default=str(NOTES_PATH),
        help="a text file whose lines are appended to the markdown (default: the committed "
        "gold_accuracy_notes.md: how keyword3 was designed, how to read the table)",
    )
    args = p.parse_args(argv)
    notes = Path(args.notes).read_text(encoding="utf-8").splitlines() if Path(args.notes).is_file() else ()
    md = write_gold_accuracy(
        [s for s in args.judges.split(",") if s.strip()],
        [s for s in args.stored.split(",") if s.strip()],
        Path(args.out) if args.out else None,
        notes=notes,
    )
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
