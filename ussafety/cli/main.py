"""``ussafety``: the command line of the study.

    ussafety align  params/cpu/aligned.yaml      build (or find) the cached aligned base
    ussafety run    params/cpu/sft_poisoned.yaml run one experiment, write its record
    ussafety eval   --model DIR params/...yaml   evaluate a model folder without training
    ussafety report phenomenon                   regenerate paper_outputs tables from records
    ussafety report methods                      the methods table (issue 3) from records
    ussafety report judges --runs DIR            judge agreement, ASR per judge, audit samples
    ussafety rejudge RUNS_DIR --judges keyword,learned   add verdicts to existing records
    ussafety judge train-learned                 (re)build the learned judge, held-out report

Every command takes ``--set key.path=value`` overrides (parsed as YAML), so a sweep
needs no new files; the override is part of the resolved config and of its hash.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ussafety.config import ConfigError, RunConfig, deep_merge, load_config, parse_override


def _config(args: argparse.Namespace) -> RunConfig:
    overrides: dict[str, Any] = {}
    for item in args.set or []:
        overrides = deep_merge(overrides, parse_override(item))
    return load_config(args.params, overrides)


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    m = record.get("metrics", {})
    judge = m.get("primary_judge")
    asr = m.get("asr", {}).get(judge, {})
    return {"run_id": record["run_id"], "asr": asr.get("asr"), "asr_ci": [asr.get("asr_ci_low"),
            asr.get("asr_ci_high")], "n_prompts": asr.get("n"),
            "over_refusal": m.get("over_refusal", {}).get("rate"),
            "task_score": m.get("task", {}).get("score"),
            "train_wall_s": record.get("train", {}).get("wall_s")}


def cmd_align(args: argparse.Namespace) -> int:
    from ussafety.train.align import aligned_base

    cfg = _config(args)
    path, record = aligned_base(cfg.model, cfg.align, force=args.force)
    print(json.dumps({"aligned_base": path, "train_wall_s": record.get("train_wall_s"),
                      "rows": record.get("rows")}, indent=1))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ussafety.pipeline import run

    root = Path(args.runs) if args.runs else None
    for params in args.params_files:
        args.params = params
        cfg = _config(args)
        record = run(cfg, force=args.force, root=root)
        print(json.dumps(_summary(record)))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ussafety.evaluate.suite import evaluate_model
    from ussafety.models.loading import load_model
    from ussafety.records.store import write_json_atomic

    cfg = _config(args)
    loaded = load_model(cfg.model, path=args.model)
    result = evaluate_model(loaded.model, loaded.tokenizer, cfg.eval, cfg.eval.task_name(cfg.task.name))
    out = {"model": args.model or cfg.model.name, "metrics": result.metrics,
           "timings": result.timings, "data_sha256": result.data_sha256,
           "generations": result.generations}
    if args.out:
        write_json_atomic(Path(args.out), out)
    print(json.dumps({k: out[k] for k in ("model", "metrics", "timings")}, indent=1, default=str))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    root = Path(args.runs) if args.runs else None
    if args.name == "judges":
        from ussafety.paths import runs_dir
        from ussafety.study.judge_reports import write_judges_report

        out = Path(args.out) if args.out else None
        print(write_judges_report(root or runs_dir(), _judge_specs(args.judges), out_dir=out,
                                  audit=not args.no_audit))
        return 0
    if args.name == "methods":
        from ussafety.study.reports import write_methods

        print(write_methods(root=root))
        return 0
    from ussafety.study.reports import write_phenomenon

    print(write_phenomenon(root=root))
    return 0


def _judge_specs(text: str) -> list[str]:
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise ConfigError("--judges needs at least one judge, e.g. keyword,learned")
    return specs


def cmd_rejudge(args: argparse.Namespace) -> int:
    from ussafety.study.judge_reports import rejudge_dir

    done = rejudge_dir(Path(args.runs_dir), _judge_specs(args.judges), force=args.force)
    print(json.dumps({"records": len(done), "judged": done}, indent=1))
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from ussafety.evaluate.judges.learned import load_or_train
    from ussafety.study.judge_reports import write_learned_heldout

    folder, _ = load_or_train(force=args.force)
    out = write_learned_heldout(folder, Path(args.out) if args.out else None)
    print(json.dumps({"artefact": str(folder), "report": str(out)}, indent=1))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from ussafety.study.reproduce import reproduce

    if args.estimate:
        from ussafety.study.grid import cost_summary, estimate_cost, expand

        df = estimate_cost(expand(args.preset, args.only and [g for g in args.only if g != "analysis"]),
                           root=Path(args.runs) if args.runs else None)
        print(df.drop(columns=["merge"]).to_string(index=False))
        print(json.dumps(cost_summary(df)))
        return 0
    reproduce(args.preset, out=Path(args.out) if args.out else None,
              runs_dir=Path(args.runs) if args.runs else None, only=args.only, force=args.force,
              n_boot=args.n_boot, log_output=not args.quiet, progress_bar=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ussafety", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.lr=1e-4 (repeatable)")

    p = sub.add_parser("align", help="build or find the cached aligned base model",
                       description="Align the model named in PARAMS with its `align:` settings "
                       "(LoRA on refusal + helpful data, merged). Cached by config hash.")
    p.add_argument("params", help="a params YAML (its model: and align: sections are used)")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    common(p)
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("run", help="run experiments (skips those with a record)",
                       description="Run each params YAML: aligned base -> fine-tuning with the "
                       "method -> evaluation -> one JSON record under runs/<name>-<hash>/.")
    p.add_argument("params_files", nargs="+", metavar="PARAMS", help="params YAML file(s)")
    p.add_argument("--force", action="store_true", help="rerun even if a record exists")
    p.add_argument("--runs", help="folder for run records (default: $USSAFETY_RUNS or ./runs)")
    common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("eval", help="evaluate a model without training",
                       description="Evaluate a model folder (or the config's model) with the "
                       "config's eval: section; prints metrics, --out writes every generation.")
    p.add_argument("params", help="a params YAML (model: and eval: sections are used)")
    p.add_argument("--model", help="model folder to evaluate (default: the config's model)")
    p.add_argument("--out", help="write metrics and generations to this JSON file")
    common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="regenerate a paper_outputs table from run records",
                       description="phenomenon: paper_outputs/foundation/phenomenon.{csv,md} from the "
                       "records of params/foundation/*.yaml (fails if a record is missing). "
                       "judges: re-judge the stored generations of every record under --runs with "
                       "--judges (records are not modified), write paper_outputs/judges/agreement.{csv,md} "
                       "and asr_by_judge.csv, and an audit.md beside each record. methods: "
                       "paper_outputs/methods/poisoned_sst2.{csv,md} from the records of "
                       "params/methods/poisoned_sst2/*.yaml (those not run yet are listed as such).")
    p.add_argument("name", choices=["phenomenon", "judges", "methods"], help="which report")
    p.add_argument("--runs", help="folder of run records (default: $USSAFETY_RUNS or ./runs)")
    p.add_argument("--judges", default="keyword,learned",
                   help="judges report: comma-separated judge specs (default keyword,learned; "
                   "LLM judges as name=<local folder>, e.g. llama_guard=/models/Llama-Guard-3-8B)")
    p.add_argument("--no-audit", action="store_true", help="judges report: write no audit.md files")
    p.add_argument("--out", help="judges report: output folder (default paper_outputs/judges)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("rejudge", help="add judges' verdicts to existing run records",
                       description="Judge the stored generations (harmful prompts, XSTest) of every "
                       "RUNS_DIR/*/record.json with --judges, without generating again; adds the verdicts, "
                       "metrics.asr[<judge>] and a 'rejudged' log entry, writing each record atomically.")
    p.add_argument("runs_dir", help="folder of run records (<run>/record.json)")
    p.add_argument("--judges", required=True, help="comma-separated judge specs, e.g. keyword,learned")
    p.add_argument("--force", action="store_true", help="replace verdicts a judge already gave")
    p.set_defaults(func=cmd_rejudge)

    p = sub.add_parser("judge", help="judge tools: train the learned judge",
                       description="train-learned: build the learned judge's data from the mirror, embed "
                       "it with MiniLM, fit the head (cached under <cache>/judges/, reused unless --force) "
                       "and write its held-out evaluation to paper_outputs/judges/learned_heldout.{csv,md}.")
    p.add_argument("action", choices=["train-learned"], help="what to do")
    p.add_argument("--force", action="store_true", help="retrain even if the artefact is cached")
    p.add_argument("--out", help="folder for the held-out report (default paper_outputs/judges)")
    p.set_defaults(func=cmd_judge)
    p = sub.add_parser("reproduce", help="run the study notebooks with papermill (resumable)",
                       description="Execute notebooks/{benign,poisoned,ablations,merging,analysis}.ipynb "
                       "in order for a preset's study (params/study/<preset>.yaml): each grid notebook runs "
                       "its runs (finished ones are skipped through their records), analysis writes the "
                       "tables, figures and scorecard.md. Executed notebooks go to <out>/notebooks/; a "
                       "notebook whose inputs (notebook, parameters, code, records) are unchanged since it "
                       "last finished is skipped, so a killed reproduce resumes.")
    p.add_argument("--preset", default="cpu", help="smoke, cpu (default), cpu-full, paper, or a study YAML")
    p.add_argument("--out", help="output folder (default: paper_outputs/ for cpu, paper_outputs/<preset>/)")
    p.add_argument("--runs", help="folder of run records (default: $USSAFETY_RUNS or ./runs)")
    p.add_argument("--only", nargs="+", metavar="NOTEBOOK",
                   help="only these notebooks (benign poisoned ablations merging analysis)")
    p.add_argument("--force", action="store_true",
                   help="execute notebooks even when unchanged (finished runs are still skipped)")
    p.add_argument("--estimate", action="store_true",
                   help="print the runs left and their estimated time from finished records; run nothing")
    p.add_argument("--n-boot", type=int, default=4000, help="bootstrap replicates (default 4000)")
    p.add_argument("--quiet", action="store_true", help="no cell progress bars or streamed output")
    p.set_defaults(func=cmd_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"ussafety: config error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
