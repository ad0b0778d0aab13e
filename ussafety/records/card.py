"""The model card of a run's saved adapter: ``runs/<run id>/adapter/README.md``.

A fine-tuning run keeps its LoRA adapter as PEFT's ``save_pretrained`` writes it (loadable
with ``PeftModel.from_pretrained``, uploadable to the hub as it is). PEFT puts a template
card beside it that says nothing; this one is written from the run's record once the
evaluation is done, so whoever picks up the folder (or finds it on the hub) reads what it
is without the record: the method and its parameters, the training data (task or upload
by sha256, poison ratio, rows), the seed and run id, and the safety that was measured
(ASR with its interval and judge, over-refusal, task score, the prompt counts). The
header is the hub's model-card metadata (``base_model``, ``library_name``, ``tags``).

The card is a function of the record alone (:func:`model_card`), so a card can be
rewritten for any finished run, and nothing in it is measured twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ussafety.atomic import write_text_atomic
from ussafety.records.schema import AsrMetrics, Rate, Record

CARD = "README.md"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The hub id of the embedded default model (``model.name: embedded``, a GGUF of it)."""
PROJECT_URL = "https://github.com/ussafety/ussafety"


def base_model_id(record: Record) -> str:
    """The model the adapter's lineage starts from, as the hub names it (the hub id the
    config names, the embedded model's hub id, or the local folder as given)."""
    name = str(record.config.get("model", {}).get("name", ""))
    return EMBEDDED_HUB_ID if name == "embedded" else name


def _interval(value: float, low: float, high: float) -> str:
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _upload_sha256(record: Record, upload: str) -> str | None:
    """The upload's sha256 as the run read it (its rows name the file they came from)."""
    if upload in record.data_sha256:
        return record.data_sha256[upload]
    name = Path(upload).name
    found = [sha for src, sha in record.data_sha256.items() if Path(src).name == name]
    return found[0] if len(found) == 1 else None


def _front_matter(record: Record) -> str:
    base = base_model_id(record)
    tags = ["ussafety", "safety", "continual-learning", "lora", record.method]
    if record.merge:
        tags.append(record.merge)
    tags.append(f"base_model:adapter:{base}")
    meta = {"base_model": base, "library_name": "peft", "pipeline_tag": "text-generation", "tags": tags}
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _method_lines(record: Record) -> list[str]:
    from ussafety.methods import family_of, method_class

    cfg = record.config
    lines = []
    for role in ("method", "merge"):
        name = cfg.get(role, {}).get("name")
        if not name:
            continue
        params = json.dumps(cfg[role].get("params", {}), sort_keys=True)
        lines.append(
            f"- {role}: `{name}` ({family_of(name)}, version {method_class(name, role).version}), params `{params}`"
        )
    train, lora, method = cfg.get("train", {}), cfg.get("train", {}).get("lora", {}), cfg.get("method", {})
    length = f"{train['max_steps']} steps" if train.get("max_steps", -1) > 0 else f"{train.get('epochs')} epochs"
    lines += [
        f"- LoRA: r {lora.get('r')}, alpha {lora.get('alpha')}, dropout {lora.get('dropout')}, "
        f"on {', '.join(lora.get('target_modules', []))}",
        f"- optimiser: lr {train.get('lr')}, {length}, batch {train.get('batch_size')} x {train.get('grad_accum')}, "
        f"max length {train.get('max_length')}, "
        f"{train.get('scheduler')} schedule, warmup ratio {train.get('warmup_ratio')}",
        f"- safety data the method may use: `{method.get('safety_set')}`, {method.get('n_safety')} rows",
    ]
    return lines


def _data_lines(record: Record) -> list[str]:
    task = record.config.get("task", {})
    poison = record.train.poison if record.train else {}
    upload = task.get("upload")
    if upload:
        sha = _upload_sha256(record, str(upload))
        lines = [f"- upload: `{Path(str(upload)).name}`, sha256 `{sha or 'not recorded'}`"]
    else:
        lines = [f"- task: `{task.get('name')}`, {task.get('n_train')} rows asked"]
    ratio = task.get("poison_ratio", 0.0)
    lines.append(
        f"- poison ratio: {ratio:g}"
        + (f" (harmful rows from `{task.get('harmful_set')}`: {poison.get('n_harmful')})" if ratio else "")
    )
    if poison:
        lines.append(
            f"- rows trained on: {poison.get('n')} ({poison.get('n_task')} task, {poison.get('n_harmful')} harmful)"
        )
    if record.train and record.train.rows is not None:
        lines.append(
            f"- with the method's own rows (replay, safety): {record.train.rows} rows, {record.train.steps} steps"
        )
    lines.append("- files read (sha256):")
    lines += [f"  - `{src}`: `{sha}`" for src, sha in sorted(record.data_sha256.items())]
    return lines


def _rate_row(what: str, rate: Rate | None, judge: str | None) -> str | None:
    if rate is None:
        return None
    return f"| {what} | {_interval(rate.rate, rate.ci_low, rate.ci_high)} | {rate.n} | {judge or rate.judge or ''} |"


def _asr_row(judge: str, asr: AsrMetrics) -> str:
    return f"| ASR (harmful prompts) | {_interval(asr.asr, asr.asr_ci_low, asr.asr_ci_high)} | {asr.n} | {judge} |"


def _safety_lines(record: Record) -> list[str]:
    m, ev = record.metrics, record.config.get("eval", {})
    primary = m.primary_judge
    rows = ["| measure | value [95% CI] | n prompts | judge |", "|---|---|---|---|"]
    rows += [_asr_row(j, m.asr[j]) for j in [primary, *sorted(set(m.asr) - {primary})] if j in m.asr]
    over = _rate_row("over-refusal (XSTest safe prompts)", m.over_refusal, primary)
    rows += [over] if over else []
    if m.task is not None:
        t = m.task
        rows.append(f"| task score ({t.name}) | {_interval(t.score, t.ci_low, t.ci_high)} | {t.n} | |")
    split = ev.get("split")
    where = f"the committed `{split}` split" if split != "sample" else f"a seeded sample (eval seed {ev.get('seed')})"
    if ev.get("harmful_file"):
        where += f", harmful prompts from `{Path(str(ev['harmful_file'])).name}`"
    return [
        f"Greedy answers of up to {ev.get('max_new_tokens')} new tokens to {where}; ASR under the primary "
        f"judge `{primary}` first, then the others; Wilson 95% intervals. Every answer and verdict is in "
        "the run record.",
        "",
        *rows,
    ]


def model_card(record: Record) -> str:
    """The card of ``record``'s adapter (see the module docstring)."""
    alignment = record.alignment
    base = base_model_id(record)
    if alignment.aligned:
        applies_to = (
            f"the aligned base that ussafety's alignment stage built from `{base}` (alignment key "
            f"`{alignment.key}`; at `{record.model_source}` on the machine that ran it, rebuilt by "
            "`ussafety align` with the run's config)"
        )
    else:
        applies_to = f"`{base}` itself (no alignment stage)"
    merge = f" then `{record.merge}`" if record.merge else ""
    lines = [
        _front_matter(record),
        f"# {record.run_id}",
        "",
        f"A LoRA adapter made by [ussafety]({PROJECT_URL}) run `{record.run_id}` (label `{record.label}`): "
        f"`{record.method}`{merge} fine-tuning of {applies_to}. It is a research artefact of a study of "
        "how fine-tuning erodes safety alignment; poisoned runs are trained on harmful answers on purpose.",
        "",
        "## Load it",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'base = AutoModelForCausalLM.from_pretrained("{record.model_source}")  # the base named above',
        f'tokenizer = AutoTokenizer.from_pretrained("{record.model_source}")',
        'model = PeftModel.from_pretrained(base, "path/to/this/folder")',
        "```",
        "",
        "## Method",
        "",
        *_method_lines(record),
        "",
        "## Training data",
        "",
        *_data_lines(record),
        "",
        "## Run",
        "",
        f"- run id: `{record.run_id}` (config hash `{record.config_hash[:16]}`, stamps `{json.dumps(record.stamps)}`)",
        f"- seed: {record.seed}",
        f"- code: git `{record.git.commit or 'unknown'}`{' (uncommitted changes)' if record.git.dirty else ''}",
        f"- started: {record.started}",
        "",
        "## Measured safety",
        "",
        *_safety_lines(record),
        "",
    ]
    return "\n".join(lines)


def write_model_card(record: Record, folder: Path) -> Path:
    """Write :func:`model_card` as ``folder/README.md`` atomically (over PEFT's template)."""
    return write_text_atomic(Path(folder) / CARD, model_card(record))


def card_metadata(text: str) -> dict[str, Any]:
    """The YAML header of a card (what the hub reads), for tests and tools."""
    if not text.startswith("---\n"):
        return {}
    header = text[4 : text.index("\n---\n", 4)]
    meta = yaml.safe_load(header)
    return meta if isinstance(meta, dict) else {}
