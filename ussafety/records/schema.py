"""The one schema of a run record: what a run writes and every table, report and notebook reads.

A record holds the run's resolved config, its id and the stamps of the code that made it,
the seed, git commit, package versions, the sha256 of every data file, timings, metrics and
every generation with every judge's verdict, so any number can be traced to the answers
behind it and re-judged later. Records are validated when read: a damaged or foreign file
fails with its path and the offending field, not with a ``KeyError`` three modules away.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    """Parts whose content belongs to one stage (training logs, alignment build info):
    the fields every reader relies on are typed, the stage may add more."""

    model_config = ConfigDict(extra="allow")


class Verdict(Strict):
    """One judge's decision on one answer (see :class:`ussafety.evaluate.judges.Verdict`).

    ``label``: the three-way label (``harmful`` / ``safe_compliance`` / ``refusal`` /
    ``benign_offtask``); None in verdicts stored before judges gave one."""

    refused: bool | None
    harmful: bool | None
    score: float | None = None
    detail: str = ""
    label: str | None = None


class Generation(Strict):
    """One prompt and the model's answer. ``kind``: ``harmful``, ``xstest_safe`` or
    ``task:<name>``; ``(source, row)`` identifies the prompt across runs (paired tests)."""

    kind: str
    source: str
    row: int
    prompt: str
    response: str
    verdicts: dict[str, Verdict] = Field(default_factory=dict)
    degenerate: str | None = None
    category: str | None = None
    pred: Any = None
    gold: Any = None
    correct: bool | None = None
    program: str | None = None
    status: str | None = None


class Rate(Strict):
    """A proportion (``count`` of ``n``) with its Wilson 95% interval. For over-refusal,
    ``offtask_rate`` is the share of safe prompts the judge calls off-task (neither
    answered nor refused), when the judge gives three-way labels."""

    rate: float
    ci_low: float
    ci_high: float
    n: int
    count: int | None = None
    judge: str | None = None
    offtask_rate: Rate | None = None


class AsrMetrics(Strict):
    asr: float
    asr_ci_low: float
    asr_ci_high: float
    n: int
    successes: int
    by_set: dict[str, AsrMetrics] = Field(default_factory=dict)
    degenerate_rate: float | None = None
    asr_excluding_degenerate: float | None = None
    refusal_rate: Rate | None = None
    offtask_rate: Rate | None = None


class TaskScore(Strict):
    name: str
    score: float
    ci_low: float
    ci_high: float
    n: int


class DegenerateRate(Strict):
    rate: float
    n: int
    by_reason: dict[str, int] = Field(default_factory=dict)


class Metrics(Strict):
    asr: dict[str, AsrMetrics]
    primary_judge: str
    over_refusal: Rate | None = None
    over_refusal_by_judge: dict[str, Rate] = Field(default_factory=dict)
    task: TaskScore | None = None
    degenerate: dict[str, DegenerateRate] = Field(default_factory=dict)

    def primary_asr(self) -> AsrMetrics:
        return self.asr[self.primary_judge]


class Timings(Open):
    harmful_s: float | None = None
    xstest_s: float | None = None
    task_s: float | None = None
    total_s: float | None = None
    generated_tokens: int | None = None
    tokens_per_s: float | None = None


class Training(Open):
    """What the fine-tuning did; ``reused_from`` when a cached SFT training served the run."""

    wall_s: float | None = None
    steps: int | None = None
    rows: int | None = None
    response_tokens: int | None = None
    poison: dict[str, Any] = Field(default_factory=dict)
    method_logs: dict[str, Any] = Field(default_factory=dict)
    finalize_s: float | None = None
    reused_from: str | None = None
    trained_by: str | None = None


class Alignment(Open):
    """The aligned base the run started from (``aligned: false`` for the instruct model)."""

    aligned: bool
    key: str | None = None
    train_wall_s: float | None = None


class Git(Strict):
    commit: str | None
    dirty: bool | None


class Record(Strict):
    """One finished run."""

    run_id: str
    label: str
    config: dict[str, Any]
    config_hash: str
    stamps: dict[str, int]
    seed: int
    git: Git
    versions: dict[str, str]
    argv: list[str] = Field(default_factory=list)
    started: str
    finished: str | None = None
    alignment: Alignment
    train: Training | None = None
    metrics: Metrics
    timings: Timings
    data_sha256: dict[str, str]
    splits: dict[str, str] = Field(default_factory=dict)
    generations: list[Generation]
    model_source: str
    rejudged: list[dict[str, Any]] = Field(default_factory=list)
    migrated_from: str | None = None

    @property
    def method(self) -> str:
        return str(self.config.get("method", {}).get("name", "none"))

    @property
    def merge(self) -> str | None:
        return self.config.get("merge", {}).get("name")

    def outcomes(self, judge: str | None = None, kind: str = "harmful") -> dict[tuple[str, int], bool]:
        """``{(source, row): harmful?}`` under ``judge`` (default: the primary one), for paired tests."""
        judge = judge or self.metrics.primary_judge
        return {
            (g.source, g.row): g.verdicts[judge].harmful is True
            for g in self.generations
            if g.kind == kind and judge in g.verdicts
        }
