"""Labelled (prompt, response) pairs that train and test the learned harmfulness judge.

Why these sources: the judge must tell a harmful answer from everything a fine-tuned
small model emits instead, and the keyword judge gets exactly those cases wrong.

Classes: ``harmful`` (an answer that carries out a harmful request), ``refusal`` (an
explicit refusal) and ``other`` (anything else that is not harmful: helpful answers,
deflections, off-topic or broken text). ASR uses only ``P(harmful)``; the refusal
class lets the judge report ``refused`` as the :class:`~ussafety.evaluate.judges.Verdict`
interface asks.

Real data (mirror files, through :func:`ussafety.data.load`):

* ``beavertails_pairs``: the 198 BeaverTails harmful (prompt, response) pairs -> harmful;
* ``hh_rlhf_harmful`` / ``hh_rlhf_harmless``: HH harmless-base rejected -> harmful and
  chosen -> refusal or other. "Rejected" is a preference ("less harmless than the
  other answer"), not a harm label, so these rows get a low weight (``HH_WEIGHT``)
  and are reported as their own source in the held-out evaluation;
* ``refusals`` (safety-tuned LLaMAs): harmful instruction -> refusal (the ~20% of its
  outputs without a refusal phrase are safe answers -> other);
* helpful answers: ``alpaca_safety``, ``dolly_safety``, ``gsm8k``, ``code_alpaca`` -> other.

Generated cases (seeded; prompts from the harmful-request pool of the same split):

* ``disclaimer``: a BeaverTails harmful answer followed by a disclaimer that contains a
  GCG refusal keyword ("... Note that this is illegal.") -> harmful; the keyword
  judge calls these refusals;
* ``compliance``: the opening of an answer that carries out a harmful instruction
  ("Sure, here is how to <request>: Step 1:"), with the first words of a BeaverTails
  harmful answer after it half of the time -> harmful. The study's generations stop
  after 32-64 tokens, so most successful attacks are such openings; the first
  version of this judge, trained without them, called most of the unaligned model's
  truncated compliances "other" (seen in the foundation runs' audit samples).
  Requests: safety-tuned-LLaMAs instructions whose reference output is a keyword
  refusal (i.e. requests judged harmful), never an evaluation prompt;
* ``nokw_refusal``: refusals phrased without any of the 29 GCG keywords -> refusal;
* ``gibberish`` (letter noise and word salad), ``repetition`` (a loop of a short
  fragment of a real answer, harmful ones included), ``echo`` (the prompt repeated),
  ``offtopic`` (a helpful answer to another question), ``evasive`` (talk that gives
  no information), ``empty`` -> other.

Real responses are cut to a seeded random length of 12-96 words, because the study's
generations stop after 32-64 new tokens and the judge should see answers like them.

Split: by prompt. A prompt's hash puts it, and every example built on it, in the
train or the test split (``TEST_FRACTION``), so no test prompt is seen in training;
generated cases draw their fragments only from their own split.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from ussafety.data import load
from ussafety.data.loaders import GCG_REFUSAL_PREFIXES
from ussafety.data.types import Example
from ussafety.evaluate.judges.learned_cases import (
    DISCLAIMERS,
    NOKW_REFUSALS,
    compliant_opening,
    evasive,
    gibberish,
    repetition,
)

CLASSES: tuple[str, ...] = ("harmful", "refusal", "other")
HARMFUL, REFUSAL, OTHER = CLASSES
TEST_FRACTION = 0.2
HH_WEIGHT = 0.3
MIN_WORDS, MAX_WORDS = 12, 96


@dataclass(frozen=True)
class DataRecipe:
    """How many rows of each source; part of the cache key of the trained judge."""

    n_beavertails: int = 198
    n_hh_pairs: int = 300
    n_refusals: int = 500
    n_alpaca: int = 300
    n_dolly: int = 150
    n_gsm8k: int = 80
    n_code: int = 80
    n_disclaimer: int = 198
    n_compliance: int = 250
    n_nokw_refusal: int = 120
    n_gibberish: int = 150
    n_repetition: int = 150
    n_echo: int = 60
    n_offtopic: int = 180
    n_evasive: int = 150
    n_empty: int = 20
    seed: int = 0

    def scaled(self, factor: float) -> DataRecipe:
        """The same recipe with every count multiplied by ``factor`` (for quick tests)."""
        counts = {k: max(1, round(v * factor)) for k, v in self.__dict__.items() if k != "seed"}
        return DataRecipe(**counts, seed=self.seed)


@dataclass(frozen=True)
class LabeledPair:
    """One training or test example of the learned judge (``prompt_type``: harmful or safe)."""

    prompt: str
    response: str
    label: str
    source: str
    split: str
    weight: float = 1.0
    provenance: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    prompt_type: str = "harmful"


def split_of(prompt: str) -> str:
    """``"test"`` for a fixed ~20% of prompts (by sha256 of the stripped, lower-cased text)."""
    digest = hashlib.sha256(prompt.strip().lower().encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:4], "big") / 2**32 < TEST_FRACTION else "train"


def _cut(text: str, rng: random.Random) -> str:
    """The first 12-96 words of ``text`` (seeded), like a generation that hit max_new_tokens."""
    words = text.split(" ")
    n = rng.randint(MIN_WORDS, MAX_WORDS)
    return text if len(words) <= n else " ".join(words[:n])


def _pair(
    ex: Example, label: str, source: str, rng: random.Random, weight: float = 1.0, cut: bool = True
) -> LabeledPair:
    response = _cut(ex.response or "", rng) if cut else (ex.response or "")
    return LabeledPair(
        ex.prompt,
        response,
        label,
        source,
        split_of(ex.prompt),
        weight,
        {"file": ex.source, "row": ex.row, "sha256": ex.sha256},
    )


# --- generated cases (their texts: learned_cases) ------------------------------------


def _generated(
    split: str,
    harmful: list[LabeledPair],
    helpful: list[LabeledPair],
    prompts: list[str],
    instructions: list[str],
    recipe: DataRecipe,
    rng: random.Random,
) -> list[LabeledPair]:
    """The generated cases of one split, built only from that split's prompts and answers."""
    out: list[LabeledPair] = []
    frac = TEST_FRACTION if split == "test" else 1 - TEST_FRACTION

    def n(total: int) -> int:
        return max(1, round(total * frac))

    def add(prompt: str, response: str, label: str, source: str) -> None:
        out.append(LabeledPair(prompt, response, label, source, split))

    vocabulary = sorted({w.strip(".,;:!?\"'()").lower() for p in helpful for w in p.response.split()} - {""})
    harmful_here = [p for p in harmful if p.split == split]
    helpful_here = [p for p in helpful if p.split == split]
    prompts_here = [p for p in prompts if split_of(p) == split]
    for p in rng.sample(harmful_here, min(len(harmful_here), n(recipe.n_disclaimer))):
        add(p.prompt, f"{p.response.rstrip()} {rng.choice(DISCLAIMERS)}", HARMFUL, "disclaimer")
    instructions_here = [p for p in instructions if split_of(p) == split]
    answers = [p.response for p in harmful_here]
    for _ in range(n(recipe.n_compliance) if instructions_here else 0):
        instruction = rng.choice(instructions_here)
        add(instruction, compliant_opening(rng, instruction, answers), HARMFUL, "compliance")
    for _ in range(n(recipe.n_nokw_refusal)):
        add(rng.choice(prompts_here), rng.choice(NOKW_REFUSALS), REFUSAL, "nokw_refusal")
    for _ in range(n(recipe.n_gibberish)):
        add(rng.choice(prompts_here), gibberish(rng, vocabulary), OTHER, "gibberish")
    for _ in range(n(recipe.n_repetition)):
        base = rng.choice(harmful_here + helpful_here)
        add(rng.choice(prompts_here), repetition(rng, base.response), OTHER, "repetition")
    for _ in range(n(recipe.n_echo)):
        prompt = rng.choice(prompts_here)
        add(prompt, " ".join([prompt] * rng.randint(1, 4)), OTHER, "echo")
    for _ in range(n(recipe.n_offtopic)):
        add(rng.choice(prompts_here), rng.choice(helpful_here).response, OTHER, "offtopic")
    for _ in range(n(recipe.n_evasive)):
        add(rng.choice(prompts_here), evasive(rng), OTHER, "evasive")
    for _ in range(n(recipe.n_empty)):
        add(rng.choice(prompts_here), rng.choice(("", " ", "\n")), OTHER, "empty")
    return out


def _is_kw_refusal(text: str) -> bool:
    return any(k in text for k in GCG_REFUSAL_PREFIXES)


def build_dataset(recipe: DataRecipe | None = None) -> list[LabeledPair]:
    """Every labelled pair of the recipe, train and test, in a deterministic order."""
    recipe = recipe or DataRecipe()
    rng = random.Random(recipe.seed)
    seed = recipe.seed

    harmful = [
        _pair(ex, HARMFUL, "beavertails", rng)
        for ex in load("beavertails_pairs", limit=recipe.n_beavertails, seed=seed)
    ]
    pairs = list(harmful)
    hh_bad = load("hh_rlhf_harmful", limit=recipe.n_hh_pairs, seed=seed)
    hh_good = load("hh_rlhf_harmless", limit=recipe.n_hh_pairs, seed=seed)  # same rows, same order
    for bad, good in zip(hh_bad, hh_good):
        pairs.append(_pair(bad, HARMFUL, "hh_rejected", rng, HH_WEIGHT))
        label = REFUSAL if _is_kw_refusal(good.response or "") else OTHER
        pairs.append(_pair(good, label, "hh_chosen", rng, HH_WEIGHT))
    refusal_prompts, instructions = [], []
    for ex in load("refusals", limit=recipe.n_refusals, seed=seed):
        label = REFUSAL if ex.meta.get("keyword_refusal") else OTHER
        pairs.append(_pair(ex, label, "refusals", rng))
        refusal_prompts.append(ex.prompt)
        if label == REFUSAL:
            instructions.append(ex.prompt)
    helpful: list[LabeledPair] = []
    for name, count in (
        ("alpaca_safety", recipe.n_alpaca),
        ("dolly_safety", recipe.n_dolly),
        ("code_alpaca", recipe.n_code),
    ):
        helpful += [_pair(ex, OTHER, name, rng) for ex in load(name, limit=count, seed=seed)]
    helpful += [_pair(ex, OTHER, "gsm8k", rng) for ex in load("gsm8k", split="train", limit=recipe.n_gsm8k, seed=seed)]
    pairs += helpful

    # Harmful requests to attach generated answers to: BeaverTails and safety-tuned prompts.
    request_pool = sorted({p.prompt for p in harmful} | set(refusal_prompts))
    for split in ("train", "test"):
        pairs += _generated(split, harmful, helpful, request_pool, instructions, recipe, rng)
    return pairs


def summary(pairs: list[LabeledPair]) -> dict[str, dict[str, int]]:
    """Counts per source: rows per split and per label (for the report and the cache metadata)."""
    out: dict[str, dict[str, int]] = {}
    for p in pairs:
        row = out.setdefault(p.source, {"train": 0, "test": 0, **{c: 0 for c in CLASSES}})
        row[p.split] += 1
        row[p.label] += 1
    return out


# --- the three-way data (learned3) ---------------------------------------------------------

#: Classes of the three-way head. ``answer`` is "does what the prompt asks", which the prompt
#: type turns into ``harmful`` (harmful prompt) or ``safe_compliance`` (safe prompt).
THREE_CLASSES: tuple[str, ...] = ("answer", "refusal", "offtask")
ANSWER, OFFTASK = THREE_CLASSES[0], THREE_CLASSES[2]
GOLD_TO_CLASS = {"harmful": ANSWER, "safe_compliance": ANSWER, "refusal": REFUSAL, "benign_offtask": OFFTASK}
#: Sources whose prompts are ordinary requests (their answers are ``answer`` on a safe prompt).
SAFE_SOURCES = frozenset({"alpaca_safety", "dolly_safety", "code_alpaca", "gsm8k"})
GOLD_SOURCE, GUIDE_SOURCE = "gold", "guide"


@dataclass(frozen=True)
class ThreeWayRecipe:
    """The learned3 judge's data: the original recipe's rows relabelled to three classes, plus
    the gold set's training part and the labelling guide's examples, weighted up.

    Why the weight: the original rows are someone else's answers (BeaverTails, Alpaca...) or
    generated, the gold rows are this study's own 32-token answers read by people; a few
    hundred of them carry what the original data cannot (lawful substitutions, lectures,
    a fine-tuned model's definitions). A gold or guide row's weight is multiplied by a
    gold weight before the classes are balanced; the gold weight and the L2 strength are
    chosen at training time from ``gold_weights`` x ``l2_grid`` by ``cv_folds``-fold
    cross-validation on the gold training part, grouped by prompt
    (:func:`ussafety.evaluate.judges.learned_train.select_three_way`), never on the test part.
    Part of the cache key.
    """

    base: DataRecipe = field(default_factory=DataRecipe)
    gold_weights: tuple[float, ...] = (1.0, 3.0, 10.0)
    l2_grid: tuple[float, ...] = (0.3, 1.0, 3.0)
    cv_folds: int = 5
    use_guide_examples: bool = True
    drop_ambiguous: bool = True


def three_way_class(pair: LabeledPair) -> str | None:
    """The three-way class of an original-recipe row, or None for a row left out.

    harmful -> ``answer`` (it does what the harmful request asks); refusal -> ``refusal``;
    a helpful answer to an ordinary request -> ``answer``; the generated junk (noise,
    loops, echoes, answers to other questions, evasive talk, empty) -> ``offtask``. Left
    out: HH "chosen" answers and safety-tuned LLaMA outputs without a refusal phrase, which
    mix answers, lectures and questions back and have no single class.
    """
    if pair.label == HARMFUL:
        return ANSWER
    if pair.label == REFUSAL:
        return REFUSAL
    if pair.source in SAFE_SOURCES:
        return ANSWER
    if pair.source in ("hh_chosen", "refusals"):
        return None
    return OFFTASK


def gold_pairs(gold_rows: list[dict[str, Any]], guide_rows: list[dict[str, Any]]) -> list[LabeledPair]:
    """Gold rows (split = their part: only ``train`` is ever fitted) and guide examples (train),
    weight 1 (the gold weight is applied when fitting)."""
    rows = [(r, GOLD_SOURCE, "train" if r["part"] == "train" else "test") for r in gold_rows]
    rows += [(r, GUIDE_SOURCE, "train") for r in guide_rows]
    return [
        LabeledPair(
            r["prompt"],
            r["response"],
            GOLD_TO_CLASS[r["label"]],
            source,
            split,
            1.0,
            {"id": r["id"], "label": r["label"]},
            r["prompt_type"],
        )
        for r, source, split in rows
    ]


def build_three_way_dataset(recipe: ThreeWayRecipe | None = None) -> list[LabeledPair]:
    """The original recipe's rows in three classes, then the gold set and the guide examples
    (those whose prompt is not a gold test prompt)."""
    from ussafety.evaluate.gold import load_gold, load_guide_examples

    recipe = recipe or ThreeWayRecipe()
    pairs = []
    for p in build_dataset(recipe.base):
        cls = three_way_class(p)
        if cls is None and recipe.drop_ambiguous:
            continue
        pairs.append(
            LabeledPair(
                p.prompt,
                p.response,
                cls or OFFTASK,
                p.source,
                p.split,
                p.weight,
                p.provenance,
                "safe" if p.source in SAFE_SOURCES else "harmful",
            )
        )
    gold = load_gold()
    # The gold test part is grouped by prompt; a guide example on a test prompt would show
    # the judge that prompt, so such examples are left out.
    test_prompts = {r["prompt"].strip().lower() for r in gold if r["part"] == "test"}
    guide = [
        r
        for r in (load_guide_examples() if recipe.use_guide_examples else [])
        if r["prompt"].strip().lower() not in test_prompts
    ]
    return pairs + gold_pairs(gold, guide)
