"""``ussafety``: the command line of the study.

    ussafety run    params/methods/poisoned_sst2/der.yaml   run experiments (finished ones are skipped)
    ussafety run    --dry-run PARAMS                        resolved config, run id and stamps; run nothing
    ussafety align  PARAMS                                  build (or find) the cached aligned base
    ussafety eval   --model DIR PARAMS                      evaluate a model folder without training
    ussafety report phenomenon|methods|judges               regenerate paper_outputs tables from records
    ussafety rejudge RUNS_DIR --judges keyword,learned      add verdicts to existing records
    ussafety judge train-learned                            (re)build the learned judge, held-out report
    ussafety judge-file --judge keyword3 --input FILE       three-way verdicts and rates for any JSONL/CSV
    ussafety reproduce --preset cpu [--estimate]            the study notebooks with papermill
    ussafety runs check|migrate [RUNS_DIR]                  stale records; re-key records to today's ids
    ussafety validate-upload FILE                           a customer upload's JSON report
    ussafety init DIR                                       copy the params presets and notebooks here

``run`` and ``reproduce`` take ``--executor ray`` to send each run to a Ray cluster
($RAY_ADDRESS, or a local one; docs/cluster.md).

Every command that reads params takes ``--set key.path=value`` overrides, converted to the
field's type and validated with the rest of the config before anything runs. Bad input
(config, upload, record) ends with a one-paragraph message and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from typing import Any

from ussafety.config import ConfigError
from ussafety.data.upload import UploadError
from ussafety.models.costs import DEVICES
from ussafety.records import RecordError

Arg = tuple[tuple[str, ...], dict[str, Any]]


def arg(*flags: str, **options: Any) -> Arg:
    """One ``add_argument`` call, as data."""
    return flags, options


SET = arg(
    "--set",
    action="append",
    metavar="KEY=VALUE",
    help="override a config value, e.g. --set train.lr=1e-4 (repeatable)",
)
RUNS = arg("--runs", help="folder of run records (default: $USSAFETY_RUNS or ./runs)")
EXECUTOR = arg(
    "--executor",
    choices=["local", "ray"],
    default="local",
    help="local: one run after another here (default); ray: each run a task on the Ray "
    "cluster at $RAY_ADDRESS (or a local one), records on the shared --runs folder",
)


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help, its ``--help`` description and its arguments. What it
    does is ``ussafety.cli.commands.cmd_<name>`` (``-`` as ``_``), imported only once the
    arguments parse, so ``--help`` and a usage error load nothing else."""

    help: str
    description: str
    args: tuple[Arg, ...]


COMMANDS: dict[str, Command] = {
    "run": Command(
        "run experiments (skips those with a record)",
        "Run each params YAML: aligned base -> fine-tuning with the method -> evaluation -> one "
        "JSON record under <runs>/<run id>/. Every file and the upload it names are validated "
        "before the first run starts.",
        (
            arg("params_files", nargs="+", metavar="PARAMS", help="params YAML file(s)"),
            arg("--force", action="store_true", help="rerun even if a record exists"),
            arg("--dry-run", action="store_true", help="print each run's id, stamps and canonical config"),
            RUNS,
            SET,
            EXECUTOR,
        ),
    ),
    "align": Command(
        "build or find the cached aligned base model",
        "Align the model named in PARAMS with its `align:` settings (LoRA on refusal + helpful "
        "data, merged). Cached by the alignment's identity.",
        (
            arg("params", help="a params YAML (its model: and align: sections are used)"),
            arg("--force", action="store_true", help="rebuild even if cached"),
            SET,
        ),
    ),
    "eval": Command(
        "evaluate a model without training",
        "Evaluate a model folder (or the config's model) with the config's eval: section; prints "
        "metrics, --out writes every generation.",
        (
            arg("params", help="a params YAML (model: and eval: sections are used)"),
            arg("--model", help="model folder to evaluate (default: the config's model)"),
            arg("--out", help="write metrics and generations to this JSON file"),
            SET,
        ),
    ),
    "report": Command(
        "regenerate a paper_outputs table from run records",
        "phenomenon: paper_outputs/foundation/phenomenon.{csv,md} from the records of "
        "params/foundation/*.yaml. methods: paper_outputs/methods/poisoned_sst2.{csv,md} from "
        "params/methods/poisoned_sst2/*.yaml. judges: re-judge stored generations under --runs "
        "with --judges (records unchanged), agreement tables and audit samples.",
        (
            arg("name", choices=["phenomenon", "judges", "methods"], help="which report"),
            RUNS,
            arg(
                "--judges",
                default="keyword,learned",
                help="judges report: comma-separated judge specs (LLM judges as name=<local folder>)",
            ),
            arg("--no-audit", action="store_true", help="judges report: write no audit.md files"),
            arg("--out", help="judges report: output folder (default paper_outputs/judges)"),
        ),
    ),
    "rejudge": Command(
        "add judges' verdicts to existing run records",
        "Judge the stored generations of every RUNS_DIR/*/record.json with --judges, without "
        "generating again; earlier verdicts are kept beside the new ones.",
        (
            arg("runs_dir", help="folder of run records (<run>/record.json)"),
            arg("--judges", required=True, help="comma-separated judge specs, e.g. keyword,learned"),
            arg("--force", action="store_true", help="replace verdicts a judge already gave"),
        ),
    ),
    "judge": Command(
        "judge tools: train the learned judge",
        "train-learned: build the learned judge's data from the mirror, embed it, fit the head "
        "(cached, reused unless --force), write its held-out evaluation.",
        (
            arg("action", choices=["train-learned"], help="what to do"),
            arg("--force", action="store_true", help="retrain even if the artefact is cached"),
            arg("--out", help="folder for the held-out report (default paper_outputs/judges)"),
        ),
    ),
    "judge-file": Command(
        "judge a JSONL/CSV file of (prompt, response) pairs",
        "Judge every row of FILE (JSONL or CSV with prompt and response fields, optional "
        "prompt_type harmful/safe, default harmful) with one judge: each row's three-way verdict "
        "and the rates per prompt type (ASR, refusal, off-task; Wilson 95 percent intervals) as "
        "JSON. Bad rows are reported with their row, line and field (exit 2) before any judge loads.",
        (
            arg("--judge", required=True, help="a judge spec, e.g. keyword3, learned3, llama_guard=<folder>"),
            arg("--input", required=True, help="JSONL (.jsonl/.json/.ndjson) or CSV (.csv) file"),
            arg("--out", help="write the JSON here (default: print it)"),
        ),
    ),
    "reproduce": Command(
        "run the study notebooks with papermill (resumable)",
        "Execute notebooks/{benign,poisoned,ablations,merging,analysis}.ipynb for a preset's "
        "study (params/study/<preset>.yaml); finished runs and unchanged notebooks are skipped, "
        "so a killed reproduce resumes.",
        (
            arg("--preset", default="cpu", help="smoke, cpu (default), cpu-full, paper, or a study YAML"),
            arg("--out", help="output folder (default: paper_outputs/ for cpu, paper_outputs/<preset>/)"),
            RUNS,
            arg(
                "--only",
                nargs="+",
                metavar="NOTEBOOK",
                help="only these notebooks (benign poisoned ablations merging analysis)",
            ),
            arg("--force", action="store_true", help="execute notebooks even when unchanged"),
            arg(
                "--estimate",
                action="store_true",
                help="print the runs left and their estimated time (from records); for a GPU study "
                "(a model other than embedded/tiny-random, or --device) the GPU-hours and peak memory "
                "per run from the models' shapes, and the runs that do not fit",
            ),
            arg(
                "--device",
                choices=list(DEVICES),
                help="with --estimate: the GPU to estimate on and fit in (default: the visible GPU, else H200)",
            ),
            arg("--quiet", action="store_true", help="no cell progress bars or streamed output"),
            EXECUTOR,
        ),
    ),
    "runs": Command(
        "check records against the code; re-key them",
        "check: records whose stamps (behaviour versions of the code that made them) differ from "
        "today's, or whose folder is not their id (exit 1 if any). migrate: move records to the "
        "id today's code gives their config (after a field was added), without rerunning; "
        "records made under other stamps are left for a rerun.",
        (
            arg("action", choices=["check", "migrate"]),
            arg("runs_dir", nargs="?", help="folder of run records (default: $USSAFETY_RUNS or ./runs)"),
            arg("--dry-run", action="store_true", help="migrate: say what would move, move nothing"),
        ),
    ),
    "validate-upload": Command(
        "check a customer upload; JSON report, exit 2 if rejected",
        "Validate an upload (chat messages, TRL prompt/completion, Alpaca, CSV) as `ussafety run` "
        "would, before anything loads: every problem with row, line, field, kind.",
        (
            arg("file"),
            arg(
                "--control-tokens",
                choices=["refuse", "escape"],
                default="refuse",
                help="chat-template control tokens in the text: refuse (default) or escape them",
            ),
        ),
    ),
    "init": Command(
        "copy the params presets and notebooks into a folder",
        "Copy params/ (presets, studies, method files) and the notebooks shipped in the installed "
        "package into DIR, to edit and run from there (an installed package has no checkout). "
        "Existing files are kept unless --force.",
        (
            arg("dir", help="target folder (created)"),
            arg("--force", action="store_true", help="overwrite files that exist"),
        ),
    ),
}
"""Every subcommand, in the order ``ussafety --help`` lists them."""


def handler_name(command: str) -> str:
    """``validate-upload`` -> ``cmd_validate_upload``, its function in :mod:`ussafety.cli.commands`."""
    return "cmd_" + command.replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ussafety", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.description)
        for flags, options in command.args:
            p.add_argument(*flags, **options)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s"
    )
    from ussafety.cli import commands

    try:
        return int(getattr(commands, handler_name(args.command))(args))
    except ConfigError as err:
        print(f"ussafety: config error: {err}", file=sys.stderr)
    except UploadError as err:
        print(f"ussafety: upload rejected: {err}", file=sys.stderr)
    except RecordError as err:
        print(f"ussafety: bad record: {err}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
