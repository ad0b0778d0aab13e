"""The pre-registered claims of the decisive study, read from ``params/study/claims.yaml``.

The file fixes, before any run on the test split exists, what each claim compares (which
conditions, which metric, which direction), how it is tested, how rows aggregate into a
claim, the significance level, the multiple-comparison family and correction, the
equivalence margins, the judges and their bar, and the rule that picks each method's
strength on the validation split. Verdicts computed later can only follow it: the file is
validated here (pydantic, unknown keys refused, method and parameter names checked against
the method registry) so a typo fails at load time with its location, not as a silently
empty claim in the scorecard.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ussafety.paths import PROJECT_ROOT

CLAIMS_PATH = PROJECT_ROOT / "params" / "study" / "claims.yaml"
FAMILIES = ("baseline", "regularization", "replay", "merging")
CL_FAMILIES = ("regularization", "replay", "merging")
"""The continual-learning families (the paper's claims 3, 5 and 9 are about them)."""
Kind = Literal[
    "benign_vs_base",
    "poisoned_vs_benign",
    "method_vs_sft",
    "method_vs_others",
    "method_vs_method",
    "gain_vs_best_other",
    "ranking_across_tasks",
]
"""What a claim can compare (:class:`Comparison`'s ``kind``)."""
KINDS: tuple[str, ...] = get_args(Kind)


class ClaimsError(ValueError):
    """A claims file that cannot govern a study: says which file and which field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _registry() -> dict[str, type]:
    from ussafety.methods import REGISTRY, load_all

    load_all()
    return dict(REGISTRY)


def _known_method(name: str) -> str:
    known = _registry()
    if name not in known:
        raise ValueError(f"'{name}' is not a registered method (known: {', '.join(sorted(known))})")
    return name


class Margins(_Strict):
    """Equivalence margins (delta) in rate units: an effect inside (-delta, +delta) is too
    small to matter, so TOST can declare two conditions *equivalent*."""

    asr: float = Field(gt=0, lt=0.5)
    over_refusal: float = Field(gt=0, lt=0.5)
    task_score: float = Field(gt=0, lt=0.5)
    gain: float = Field(gt=0, lt=1.0)


class Judges(_Strict):
    """Judges whose verdicts decide the claims (``decide``), judges only reported
    (``report``), and the bar a judge must pass on the gold set's test part to count."""

    decide: list[str] = Field(min_length=1)
    report: list[str] = Field(default_factory=list)
    kappa_bar: float = Field(gt=0, lt=1)
    gold_scores: str

    @model_validator(mode="after")
    def _disjoint(self) -> Judges:
        both = set(self.decide) & set(self.report)
        if both:
            raise ValueError(f"judge(s) {sorted(both)} both in 'decide' and 'report'")
        return self


class Design(_Strict):
    """The decisive study's size, which the power calculations plan for."""

    test_prompts: int = Field(gt=0)
    validation_prompts: int = Field(gt=0)
    seeds: int = Field(gt=0)
    planning_comparisons: int = Field(gt=0)


class StrengthParam(_Strict):
    """Which method parameter is its strength and which way is stronger; ``param: null``
    for a method without a continuous strength (it runs at its defaults)."""

    param: str | None
    stronger: Literal["higher", "lower"] | None = None

    @model_validator(mode="after")
    def _paired(self) -> StrengthParam:
        if (self.param is None) != (self.stronger is None):
            raise ValueError("'param' and 'stronger' are given together (or both null)")
        return self


class StrengthRule(_Strict):
    """How a method's strength is chosen on the validation split (see :mod:`.frontier`)."""

    split: Literal["validation"]
    objective: Literal["min_asr"]
    max_task_drop: float = Field(ge=0, lt=1)
    max_over_refusal_rise: float | None = Field(default=None, ge=0, lt=1)
    tie_tolerance: float = Field(ge=0, lt=0.5)
    ties: Literal["weaker"]
    fallback: Literal["best_task"]
    methods: dict[str, StrengthParam]

    @field_validator("methods")
    @classmethod
    def _complete(cls, methods: dict[str, StrengthParam]) -> dict[str, StrengthParam]:
        known = _registry()
        for name, spec in methods.items():
            _known_method(name)
            fields = {f.name for f in dataclasses.fields(known[name])}
            if spec.param is not None and spec.param not in fields:
                raise ValueError(
                    f"{name}: '{spec.param}' is not a parameter of {name} (has: {', '.join(sorted(fields))})"
                )
        public = {n for n in known if not n.startswith("_")}  # "_" names: test-only methods
        missing = sorted(public - set(methods) - {"sft"})
        if missing:
            raise ValueError(
                f"no strength entry for {', '.join(missing)} (write 'param: null' for a "
                f"method without one, so every method is pre-registered)"
            )
        return methods


class Comparison(_Strict):
    """What a claim compares; which fields apply depends on ``kind`` (checked below)."""

    kind: Kind
    families: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)
    method: str | None = None
    pairs: list[tuple[str, str]] = Field(default_factory=list)
    scenario: Literal["any", "benign", "poisoned"] = "any"
    largest_poison_ratio: bool = False
    min_poison_ratios: int = Field(default=1, ge=1)

    @field_validator("families")
    @classmethod
    def _families(cls, families: list[str]) -> list[str]:
        bad = [f for f in families if f not in FAMILIES]
        if bad:
            raise ValueError(f"unknown famil(ies) {bad} (known: {', '.join(FAMILIES)})")
        return families

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Comparison:
        named = [*self.methods, *([self.method] if self.method else []), *(m for p in self.pairs for m in p)]
        for name in named:
            _known_method(name)
        needs = {
            "method_vs_sft": bool(self.families or self.methods),
            "method_vs_others": bool(self.method),
            "method_vs_method": bool(self.pairs),
            "gain_vs_best_other": bool(self.method),
        }
        if not needs.get(self.kind, True):
            what = {"method_vs_sft": "'families' or 'methods'", "method_vs_method": "'pairs'"}.get(
                self.kind, "'method'"
            )
            raise ValueError(f"kind {self.kind} needs {what}")
        if self.largest_poison_ratio and self.kind != "method_vs_sft":
            raise ValueError("largest_poison_ratio applies to kind method_vs_sft only")
        return self


class ClaimSpec(_Strict):
    """One claim: its comparison, metric, test, claimed direction and aggregation rule.

    ``test``: ``directional`` (reproduced / refuted / equivalent / underpowered),
    ``noninferiority`` (the method is not worse than the reference by more than the
    metric's margin; reproduced / refuted / underpowered) or ``rank`` (Kendall's tau of
    method effects between tasks). ``direction``: the sign the claim predicts for
    ``a - b`` (for non-inferiority: which way is better). ``aggregate``: ``all`` (the
    claim is about every row) or ``majority`` (about the rows in general).
    """

    id: str
    number: int = Field(ge=1)
    title: str
    paper: str
    finer: bool = False
    comparison: Comparison
    metric: Literal["asr", "task_score", "gain"]
    test: Literal["directional", "noninferiority", "rank"]
    direction: Literal["increase", "decrease"]
    aggregate: Literal["all", "majority"]

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", value):
            raise ValueError(f"id '{value}' must be lower_snake_case")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ClaimSpec:
        kind = self.comparison.kind
        if (self.metric == "gain") != (kind == "gain_vs_best_other"):
            raise ValueError("metric 'gain' goes with kind gain_vs_best_other, and only with it")
        if (self.test == "rank") != (kind == "ranking_across_tasks"):
            raise ValueError("test 'rank' goes with kind ranking_across_tasks, and only with it")
        if self.test == "noninferiority" and self.metric == "gain":
            raise ValueError("non-inferiority is defined for asr and task_score")
        return self

    @property
    def sign(self) -> int:
        """+1 when the claim predicts ``a - b > 0`` (or that higher is better), else -1."""
        return 1 if self.direction == "increase" else -1


class ClaimsFile(_Strict):
    """The whole pre-registration."""

    version: int = Field(ge=1)
    status: str
    alpha: float = Field(gt=0, lt=0.5)
    power: float = Field(gt=0.5, lt=1)
    correction: Literal["holm"]
    family: Literal["claim_judge"]
    margins: Margins
    judges: Judges
    design: Design
    strength: StrengthRule
    claims: list[ClaimSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ClaimsFile:
        for attr in ("id", "number"):
            values = [getattr(c, attr) for c in self.claims]
            dup = sorted({v for v in values if values.count(v) > 1}, key=str)
            if dup:
                raise ValueError(f"claim {attr}(s) {dup} appear more than once")
        return self

    def margin(self, metric: str) -> float:
        """The equivalence margin of ``metric`` (``asr``, ``task_score``, ``gain``...)."""
        return float(getattr(self.margins, metric))

    def claim(self, claim_id: str) -> ClaimSpec:
        for c in self.claims:
            if c.id == claim_id:
                return c
        raise KeyError(f"no claim '{claim_id}' (have: {', '.join(c.id for c in self.claims)})")


def _where(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """``claims[3] (lisa_lowest).comparison.method`` from a pydantic error location."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int) and parts:
            label = (
                node[item].get("id")
                if isinstance(node, list) and item < len(node) and isinstance(node[item], dict)
                else None
            )
            parts[-1] += f"[{item}]" + (f" ({label})" if label else "")
        else:
            parts.append(str(item))
        ok = (isinstance(node, dict) and item in node) or (
            isinstance(node, list) and isinstance(item, int) and item < len(node)
        )
        node = node[item] if ok else None
    return ".".join(parts) or "(top level)"


def parse_claims(data: Any, where: str = "claims") -> ClaimsFile:
    """Validate an already-read claims mapping; :class:`ClaimsError` names every problem."""
    if not isinstance(data, dict):
        raise ClaimsError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return ClaimsFile.model_validate(data)
    except ValidationError as err:
        problems = [
            f"  {_where(tuple(e['loc']), data)}: {e['msg'].removeprefix('Value error, ')}" for e in err.errors()
        ]
        raise ClaimsError(f"{where}: {len(problems)} problem(s):\n" + "\n".join(problems)) from None


def load_claims(path: Path | str | None = None) -> ClaimsFile:
    """``params/study/claims.yaml`` (or ``path``), validated."""
    path = Path(path) if path is not None else CLAIMS_PATH
    if not path.is_file():
        raise ClaimsError(f"no claims file at {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ClaimsError(f"{path}: not valid YAML: {err}") from None
    return parse_claims(data, str(path))
