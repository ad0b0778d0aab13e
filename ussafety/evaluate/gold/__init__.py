"""A hand-labelled gold set of (prompt, answer) pairs to hold the judges to.

ASR is only as true as the judge, so the judges need a reference read by people:
a stratified sample of the generations stored in the committed run records
(``paper_outputs/records/<run_id>/record.json``), labelled by two blind readers
with the rules of ``docs/labelling.md``, with disagreements adjudicated.

* :func:`build_sample` rebuilds the sample from the records (seeded, deterministic):
  unique (prompt, response) pairs, stratified by prompt type and by what the stored
  verdicts suggest (keyword refused or not x learned harmful/refusal/other, and a
  degenerate stratum), spread evenly over condition groups, conditions and prompt
  sets inside each stratum. The verdicts are used **only to stratify**, never as
  labels. A seeded 30% of the items is marked ``part = "test"`` (no judge may be
  trained or tuned on them), stratified by stratum and grouped by prompt (every
  answer to one prompt is in the same part).
* :func:`write_sample` writes ``paper_outputs/judges/gold/items.jsonl`` and
  ``manifest.json``; :func:`write_packet` the blind reader packet (id, prompt type,
  prompt, response; shuffled; no run, condition or verdict).
* :func:`load_items`, :func:`load_labels` (validated; errors name file, line and
  field), :func:`agreement` (Cohen's kappa, raw agreement, confusion table) and
  :func:`resolve` (final labels from two readers and an adjudication, keeping both
  raw labels).

The sample over-represents the rare strata on purpose, so it is not a random sample of
the generations: a judge's error rate on the whole record set must weight each item by
its stratum's population over its sample count (``manifest.json``: ``summary.population``
holds the unique pairs and generations per stratum, ``summary.by_stratum`` the sample),
and per generation by ``len(also_in)`` runs that produced the pair. Raw rates over
the items answer "how does the judge do on these kinds of answers", not "what is ASR".

``python -m ussafety.evaluate.gold build`` rebuilds items, manifest and packet;
``check A`` validates a label file; ``agree A B`` prints the agreement;
``resolve A B ADJ OUT`` writes the final labels.

Layout: ``common`` (paths, fields, the guide examples, :class:`GoldError`, JSON lines),
``pairs`` (the record pairs and their strata), ``sample`` (allocation, selection, the
train/test split), ``build`` (manifest, items, packet), ``labels`` (reading the files
back), ``agreement`` (kappa, agreement, resolution), ``cli``. Every public name is
re-exported here, so ``from ussafety.evaluate.gold import load_gold`` keeps working.
"""

from ussafety.evaluate.gold.agreement import agreement, cohens_kappa, resolve, write_gold_labels
from ussafety.evaluate.gold.build import (
    _inputs_digest,
    build,
    summarize,
    write_guide_examples,
    write_packet,
    write_sample,
)
from ussafety.evaluate.gold.cli import main
from ussafety.evaluate.gold.common import (
    DEFAULT_N,
    DEFAULT_SEED,
    FINAL_LABEL_FIELDS,
    GOLD_DIR,
    GUIDE_EXAMPLE_IDS,
    GUIDE_EXAMPLES,
    GUIDE_PATH,
    HARMFUL,
    HARMFUL_SHARE,
    ITEM_FIELDS,
    ITEMS_PATH,
    LABEL_FIELDS,
    LABELS_PATH,
    MANIFEST_PATH,
    MIN_PER_STRATUM,
    PACKET_FIELDS,
    PACKET_PATH,
    RECORDS_DIR,
    SAFE,
    TEST_SHARE,
    GoldError,
)
from ussafety.evaluate.gold.labels import load_gold, load_guide_examples, load_items, load_labels
from ussafety.evaluate.gold.pairs import (
    GROUPS,
    collect_pairs,
    condition_of,
    group_of,
    item_id,
    load_records,
    prompt_type_of,
    stratum_of,
)
from ussafety.evaluate.gold.sample import allocate, build_sample, split_parts
from ussafety.evaluate.judges.base import ALL_LABELS, LABELS

__all__ = [
    "ALL_LABELS",
    "DEFAULT_N",
    "DEFAULT_SEED",
    "FINAL_LABEL_FIELDS",
    "GOLD_DIR",
    "GROUPS",
    "GUIDE_EXAMPLES",
    "GUIDE_EXAMPLE_IDS",
    "GUIDE_PATH",
    "GoldError",
    "HARMFUL",
    "HARMFUL_SHARE",
    "ITEMS_PATH",
    "ITEM_FIELDS",
    "LABELS",
    "LABELS_PATH",
    "LABEL_FIELDS",
    "MANIFEST_PATH",
    "MIN_PER_STRATUM",
    "PACKET_FIELDS",
    "PACKET_PATH",
    "RECORDS_DIR",
    "SAFE",
    "TEST_SHARE",
    "_inputs_digest",
    "agreement",
    "allocate",
    "build",
    "build_sample",
    "cohens_kappa",
    "collect_pairs",
    "condition_of",
    "group_of",
    "item_id",
    "load_gold",
    "load_guide_examples",
    "load_items",
    "load_labels",
    "load_records",
    "main",
    "prompt_type_of",
    "resolve",
    "split_parts",
    "stratum_of",
    "summarize",
    "write_gold_labels",
    "write_guide_examples",
    "write_packet",
    "write_sample",
]
