"""``python -m ussafety.evaluate.gold``: build the sample, check a label file, print the
readers' agreement, write the final labels."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ussafety.evaluate.gold.agreement import agreement, resolve, write_gold_labels
from ussafety.evaluate.gold.build import build
from ussafety.evaluate.gold.common import (
    DEFAULT_N,
    DEFAULT_SEED,
    GOLD_DIR,
    ITEMS_PATH,
    PACKET_PATH,
    RECORDS_DIR,
    GoldError,
)
from ussafety.evaluate.gold.labels import load_items, load_labels

DESCRIPTION = "A hand-labelled gold set of (prompt, answer) pairs to hold the judges to."


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ussafety.evaluate.gold", description=DESCRIPTION)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="rebuild items.jsonl, manifest.json and the reader packet")
    b.add_argument("--records", default=str(RECORDS_DIR))
    b.add_argument("--n", type=int, default=DEFAULT_N)
    b.add_argument("--seed", type=int, default=DEFAULT_SEED)
    b.add_argument("--items", default=str(ITEMS_PATH))
    b.add_argument("--packet", default=str(PACKET_PATH))
    c = sub.add_parser("check", help="validate a label file against the items")
    c.add_argument("labels")
    c.add_argument("--partial", action="store_true", help="do not require every item")
    g = sub.add_parser("agree", help="agreement of two label files (JSON on stdout)")
    g.add_argument("a")
    g.add_argument("b")
    r = sub.add_parser("resolve", help="final labels from two readers and an adjudication file")
    r.add_argument("a")
    r.add_argument("b")
    r.add_argument("adjudicated")
    r.add_argument("out", nargs="?", default=str(GOLD_DIR / "labels.jsonl"))
    args = p.parse_args(argv)
    try:
        if args.cmd == "build":
            m = build(args.records, args.n, args.seed, args.items, args.packet)
            print(json.dumps({k: m["summary"][k] for k in ("n", "n_test", "n_prompts", "by_prompt_type")}))
        elif args.cmd == "check":
            labels = load_labels(args.labels, require_all=not args.partial)
            print(f"{args.labels}: {len(labels)} valid labels")
        elif args.cmd == "agree":
            items = load_items()
            res = agreement(load_labels(args.a, items), load_labels(args.b, items), items)
            print(json.dumps(res, indent=1))
        elif args.cmd == "resolve":
            items = load_items()
            adj = load_labels(args.adjudicated, items, require_all=False)
            res = resolve(load_labels(args.a, items), load_labels(args.b, items), adj)
            print(write_gold_labels(res, items, args.out))
    except GoldError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0
