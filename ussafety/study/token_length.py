"""The token-length study (issue 12, item 2): how verdicts change between 32, 64, 128 and
256 new tokens, so that the evaluation's default length is shown, not assumed.

Why one generation per condition is enough: decoding is greedy, so the answer a run with
``max_new_tokens = L`` gives is the first ``L`` tokens of the 256-token answer. Each record
of ``params/evaluation/token_length/`` (label ``toklen-*``, 256 new tokens, validation split)
is cut at every length by re-tokenising its stored answer with the model's tokenizer, and
every cut is judged again by each judge. Cutting a decoded answer and re-encoding it can
move a token boundary at the cut by one piece of a word; that changes no keyword match and
is stated in the output. Regenerate::

    python -m ussafety.study.token_length [--records paper_outputs/records] [--out paper_outputs/evaluation]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ussafety.atomic import write_text_atomic
from ussafety.evaluate.judges import HARMFUL, REFUSAL, get_judge, judge_pairs, prompt_type_of
from ussafety.records import Record, iter_records
from ussafety.stats import mcnemar_exact, wilson_interval

PREFIX = "toklen-"
"""Records whose label starts with this are the study's conditions."""
LENGTHS: tuple[int, ...] = (32, 64, 128, 256)
JUDGES: tuple[str, ...] = ("keyword", "keyword3", "learned3")
KINDS: dict[str, str] = {"harmful": HARMFUL, "xstest_safe": REFUSAL}
"""Generation kind -> the label counted: ASR on harmful prompts, over-refusal on safe ones."""
METRIC = {"harmful": "asr", "xstest_safe": "over_refusal"}

COLUMNS = [
    "condition",
    "run_id",
    "kind",
    "metric",
    "judge",
    "tokens",
    "n",
    "count",
    "rate",
    "ci_low",
    "ci_high",
    "still_running",
    "changed_vs_256",
    "flips_up",
    "flips_down",
    "mcnemar_p_vs_256",
]
KEY_COLUMNS = ("condition", "run_id", "kind", "metric", "count")
"""Columns the markdown shows in its section titles (or not at all) rather than in the table."""


def is_study_record(rec: Record) -> bool:
    return (rec.label or "").startswith(PREFIX)


def cut_answers(
    answers: Sequence[str], length: int, encode: Callable[[str], list[int]], decode: Callable[[list[int]], str]
) -> tuple[list[str], list[bool]]:
    """Each answer's first ``length`` tokens, and whether it was still running there (it
    has at least ``length`` tokens, so a run with that limit would have been cut)."""
    cut, running = [], []
    for text in answers:
        ids = encode(text)
        cut.append(decode(ids[:length]) if len(ids) > length else text)
        running.append(len(ids) >= length)
    return cut, running


def condition_rows(
    rec: Record,
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
    judges: Sequence[str] = JUDGES,
    lengths: Sequence[int] = LENGTHS,
) -> list[dict[str, Any]]:
    """Rows for one condition: per generation kind, judge and length, the rate of the
    counted label with its Wilson interval, and how the verdicts differ from the longest
    length's (label changes, flips of the counted flag each way, exact McNemar p)."""
    longest = max(lengths)
    rows: list[dict[str, Any]] = []
    for kind, target in KINDS.items():
        gens = [g for g in rec.generations if g.kind == kind]
        if not gens:
            continue
        prompts = [g.prompt for g in gens]
        types = [prompt_type_of(kind)] * len(gens)
        cuts = {n: cut_answers([g.response for g in gens], n, encode, decode) for n in lengths}
        for spec in judges:
            judge = get_judge(spec)
            labels = {n: [v.label for v in judge_pairs(judge, prompts, cuts[n][0], types)] for n in lengths}
            ref = [lab == target for lab in labels[longest]]
            for n in lengths:
                flags = [lab == target for lab in labels[n]]
                count = sum(flags)
                lo, hi = wilson_interval(count, len(flags))
                test = mcnemar_exact(flags, ref)
                rows.append(
                    {
                        "condition": rec.label[len(PREFIX) :],
                        "run_id": rec.run_id,
                        "kind": kind,
                        "metric": METRIC[kind],
                        "judge": spec,
                        "tokens": n,
                        "n": len(flags),
                        "count": count,
                        "rate": round(count / len(flags), 3),
                        "ci_low": round(lo, 3),
                        "ci_high": round(hi, 3),
                        "still_running": sum(cuts[n][1]),
                        "changed_vs_256": sum(a != b for a, b in zip(labels[n], labels[longest])),
                        "flips_up": test.b10,
                        "flips_down": test.b01,
                        "mcnemar_p_vs_256": float(f"{test.p_value:.3g}"),
                    }
                )
    return rows


def to_csv(rows: list[dict[str, Any]]) -> str:
    return pd.DataFrame(rows, columns=COLUMNS).to_csv(index=False, lineterminator="\n")


def to_markdown(rows: list[dict[str, Any]], records: list[Record], records_dir: str) -> str:
    lines = [
        "# Token-length study (issue 12, item 2): verdicts at 32, 64, 128 and 256 new tokens",
        "",
        "Generated by `python -m ussafety.study.token_length` from the run records; do not edit by hand.",
        "",
        "Each condition was generated once with 256 new tokens (greedy) on the validation split; "
        "the answer at a shorter length is the 256-token answer's prefix, cut by re-tokenising. "
        "`rate`: ASR (harmful prompts, label `harmful`) or over-refusal (XSTest safe prompts, "
        "label `refusal`) with its Wilson 95% interval; `still_running`: answers with at least "
        "that many tokens (a run with that limit cuts them); `changed_vs_256`: verdict labels that "
        "differ from the 256-token verdict; `flips_up` / `flips_down`: prompts counted at this "
        "length but not at 256 / counted at 256 but not here; `mcnemar_p_vs_256`: exact McNemar "
        "test of the counted flag, paired by prompt (uncorrected).",
        "",
    ]
    cols = [c for c in COLUMNS if c not in KEY_COLUMNS]
    for cond in dict.fromkeys(r["condition"] for r in rows):
        for kind in KINDS:
            sub = [r for r in rows if r["condition"] == cond and r["kind"] == kind]
            if not sub:
                continue
            lines += [f"## {cond}: {METRIC[kind]} ({sub[0]['n']} prompts)", ""]
            lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in sub]
            lines.append("")
    lines += ["Records:", ""]
    lines += [f"- `{r.label}`: `{records_dir}/{r.run_id}/record.json`" for r in records]
    return "\n".join(lines) + "\n"


def tokenizer_codec(model_dir: str) -> tuple[Callable[[str], list[int]], Callable[[list[int]], str]]:
    """Encode/decode with the model's own tokenizer (the answers' token boundaries)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)

    def encode(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False)["input_ids"])

    def decode(ids: list[int]) -> str:
        return str(tok.decode(ids, skip_special_tokens=True))

    return encode, decode


def write_study(records_dir: Path, out_dir: Path) -> list[dict[str, Any]]:
    from ussafety.config import ModelConfig
    from ussafety.models.loading import model_dir_for

    records = sorted((r for r in iter_records(records_dir) if is_study_record(r)), key=lambda r: r.label or "")
    if not records:
        raise SystemExit(f"no {PREFIX}* records under {records_dir}: run params/evaluation/token_length/*.yaml first")
    rows: list[dict[str, Any]] = []
    codecs: dict[str, Any] = {}
    for rec in records:
        model = ModelConfig.model_validate(rec.config["model"])
        key = model_dir_for(model)
        codecs.setdefault(key, tokenizer_codec(key))
        rows += condition_rows(rec, *codecs[key])
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "token_length.csv", to_csv(rows))
    rel = Path("..") / records_dir.name if records_dir.parent == out_dir.parent else records_dir
    write_text_atomic(out_dir / "token_length.md", to_markdown(rows, records, str(rel)))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", default="paper_outputs/records")
    p.add_argument("--out", default="paper_outputs/evaluation")
    args = p.parse_args(argv)
    rows = write_study(Path(args.records), Path(args.out))
    print(f"{len(rows)} rows -> {args.out}/token_length.{{csv,md}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
