"""``python -m ussafety.data.splits build|check|show``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ussafety.data.splits.base import NAMES, SPLITS, SPLITS_DIR
from ussafety.data.splits.build import build_all, dumps, write_splits
from ussafety.data.splits.read import read_split, split_examples, split_sha256


def check(directory: Path = SPLITS_DIR) -> list[str]:
    """Problems with the committed splits: differs from a fresh build, or an id does not resolve."""
    problems = []
    for name, doc in build_all().items():
        path = directory / f"{name}.json"
        if not path.is_file() or path.read_text(encoding="utf-8") != dumps(doc):
            problems.append(f"{path} differs from a fresh build (run: python -m ussafety.data.splits build)")
            continue
        split_sha256(name, directory)
        for split in SPLITS:
            split_examples(name, split, directory=directory)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ussafety.data.splits", description="Build or check the committed evaluation splits."
    )
    parser.add_argument("command", choices=["build", "check", "show"])
    parser.add_argument("--dir", type=Path, default=SPLITS_DIR, help="where the JSON files live")
    args = parser.parse_args(argv)
    if args.command == "build":
        for path in write_splits(build_all(), args.dir):
            print(path)
    elif args.command == "check":
        problems = check(args.dir)
        print("\n".join(problems) or "splits match a fresh build and resolve")
        return 1 if problems else 0
    for name in NAMES:
        doc = read_split(name, args.dir)
        print(
            f"{name}  sha256 {split_sha256(name, args.dir)}  validation {len(doc['splits']['validation'])}"
            f"  test {len(doc['splits']['test'])}"
        )
        for s, c in doc["counts"].items():
            print(f"  {s:22s} {c}")
    return 0
