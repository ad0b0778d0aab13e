"""What each ``ussafety`` subcommand does; the parser is in :mod:`ussafety.cli.main`.

Handlers import the heavy parts (torch, transformers, the pipeline) inside, after every
config and upload has been checked, so a bad one is reported in well under a second, before
any of them loads (``tests/test_cli.py`` checks that none is imported by then).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ussafety.config import ConfigError, RunConfig, deep_merge, load_config, parse_override, preflight, run_id

if TYPE_CHECKING:
    from ussafety.records import Record


def configs(args: argparse.Namespace, files: list[str]) -> list[RunConfig]:
    """Every params file resolved and validated (with ``--set`` overrides) before anything runs."""
    overrides: dict[str, Any] = {}
    for item in args.set or []:
        overrides = deep_merge(overrides, parse_override(item))
    return [load_config(f, overrides) for f in files]


def summary(record: Record) -> dict[str, Any]:
    m = record.metrics
    asr = m.primary_asr()
    return {
        "run_id": record.run_id,
        "judge": m.primary_judge,
        "asr": asr.asr,
        "asr_ci": [asr.asr_ci_low, asr.asr_ci_high],
        "n_prompts": asr.n,
        "over_refusal": m.over_refusal.rate if m.over_refusal else None,
        "task_score": m.task.score if m.task else None,
        "train_wall_s": record.train.wall_s if record.train else None,
    }


def runs_root(args: argparse.Namespace) -> Path | None:
    return Path(args.runs) if getattr(args, "runs", None) else None


def cmd_align(args: argparse.Namespace) -> int:
    from ussafety.train.align import aligned_base

    (cfg,) = configs(args, [args.params])
    path, record = aligned_base(cfg, force=args.force)
    print(
        json.dumps(
            {"aligned_base": path, "train_wall_s": record.get("train_wall_s"), "rows": record.get("rows")}, indent=1
        )
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfgs = configs(args, args.params_files)
    if args.dry_run:
        from ussafety.config.identity import canonical, stamps

        for cfg in cfgs:
            print(
                json.dumps(
                    {"run_id": run_id(cfg), "label": cfg.name, "stamps": stamps(cfg), "canonical": canonical(cfg)},
                    indent=1,
                )
            )
        return 0
    for cfg in cfgs:
        preflight(cfg)  # uploads and judge folders: still nothing loaded
    from ussafety.pipeline import run

    if getattr(args, "executor", "local") == "ray":
        return run_on_ray(args, cfgs)
    for cfg in cfgs:
        print(json.dumps(summary(run(cfg, force=args.force, root=runs_root(args)))))
    return 0


def run_on_ray(args: argparse.Namespace, cfgs: list[RunConfig]) -> int:
    """``run --executor ray``: every run without a record as a Ray task; a summary line per
    record, then the execution summary (retries, failures); exit 1 if a run failed."""
    from ussafety.study.executor import execute

    if args.force:
        raise ConfigError(
            "--force is not available with --executor ray: a rerun on a cluster must not race "
            "the record it replaces; delete the record (or use --executor local)"
        )
    result = execute(cfgs, "ray", root=runs_root(args))
    for record in result.records:
        print(json.dumps(summary(record)))
    print(json.dumps(result.summary()))
    return 1 if result.failures else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ussafety.evaluate.suite import evaluate_model
    from ussafety.models.loading import load_model
    from ussafety.records import write_json_atomic

    (cfg,) = configs(args, [args.params])
    loaded = load_model(cfg.model, path=args.model)
    result = evaluate_model(loaded.model, loaded.tokenizer, cfg.eval, cfg.eval.task_name(cfg.task.name))
    out = {
        "model": args.model or cfg.model.name,
        "metrics": result.metrics,
        "timings": result.timings,
        "data_sha256": result.data_sha256,
        "generations": result.generations,
    }
    if args.out:
        write_json_atomic(Path(args.out), out)
    print(json.dumps({k: out[k] for k in ("model", "metrics", "timings")}, indent=1, default=str))
    return 0


def judge_specs(text: str) -> list[str]:
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise ConfigError("--judges needs at least one judge, e.g. keyword,learned")
    return specs


def cmd_report(args: argparse.Namespace) -> int:
    root = runs_root(args)
    if args.name == "judges":
        from ussafety.paths import runs_dir
        from ussafety.study.judge_reports import write_judges_report

        print(
            write_judges_report(
                root or runs_dir(),
                judge_specs(args.judges),
                out_dir=Path(args.out) if args.out else None,
                audit=not args.no_audit,
            )
        )
    elif args.name == "methods":
        from ussafety.study.reports import write_methods

        print(write_methods(root=root))
    else:
        from ussafety.study.reports import write_phenomenon

        print(write_phenomenon(root=root))
    return 0


def cmd_rejudge(args: argparse.Namespace) -> int:
    from ussafety.study.judge_reports import rejudge_dir

    done = rejudge_dir(Path(args.runs_dir), judge_specs(args.judges), force=args.force)
    print(json.dumps({"records": len(done), "judged": done}, indent=1))
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from ussafety.evaluate.judges.learned import load_or_train
    from ussafety.study.judge_reports import write_learned_heldout

    folder, _ = load_or_train(force=args.force)
    out = write_learned_heldout(folder, Path(args.out) if args.out else None)
    print(json.dumps({"artefact": str(folder), "report": str(out)}, indent=1))
    return 0


def cmd_judge_file(args: argparse.Namespace) -> int:
    """Judge a JSONL/CSV file with one judge; the file is checked before the judge loads."""
    from ussafety.evaluate.judges import REGISTRY, get_judge, parse_judge_spec
    from ussafety.evaluate.judges.judge_file import JudgeFileError, judge_file, read_pairs

    name, _ = parse_judge_spec(args.judge)
    if name not in REGISTRY:
        raise ConfigError(f"--judge: unknown judge {name!r}; known: {', '.join(sorted(REGISTRY))}")
    try:
        read_pairs(args.input)  # every problem named before a model loads
    except JudgeFileError as exc:
        raise ConfigError(str(exc)) from None
    from ussafety.evaluate.judges.llm import JudgeUnavailable

    try:
        judge = get_judge(args.judge)
    except (JudgeUnavailable, ValueError) as exc:  # no local weights, or an argument it does not take
        raise ConfigError(f"--judge {args.judge}: {exc}") from None
    result = judge_file(judge, args.input)
    if args.out:
        from ussafety.records import write_json_atomic

        write_json_atomic(Path(args.out), result)
        print(
            json.dumps(
                {"out": args.out, "judge": result["judge"], "n": result["n"], "summary": result["summary"]}, indent=1
            )
        )
    else:
        print(json.dumps(result, indent=1, ensure_ascii=False))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    if args.estimate:
        from ussafety.study.gpu_report import gpu_study_report, is_gpu_study
        from ussafety.study.grid import expand, unique_runs

        grids = args.only and [g for g in args.only if g != "analysis"]
        runs = expand(args.preset, grids)
        cfgs = [r.cfg for r in unique_runs(runs)]
        if args.device or is_gpu_study(cfgs):  # estimated from the models' shapes: no record needed
            print(gpu_study_report(cfgs, device=args.device, title=f"{args.preset}: GPU estimate"))
            return 0
        from ussafety.study.cost import cost_summary, estimate_cost

        df = estimate_cost(runs, root=runs_root(args))
        print(df.drop(columns=["merge"]).to_string(index=False))
        print(json.dumps(cost_summary(df)))
        return 0
    from ussafety.study.reproduce import reproduce

    if getattr(args, "executor", "local") == "ray":  # the grids first, on the cluster; the notebooks find them
        from ussafety.study.executor import execute
        from ussafety.study.grid import expand, load_study, unique_runs

        study = load_study(args.preset)
        grids = [g for g in (args.only or study.grid_names()) if g in study.grids]
        result = execute([r.cfg for r in unique_runs(expand(study, grids))], "ray", root=runs_root(args))
        print(json.dumps(result.summary()))
        if result.failures:
            return 1
    reproduce(
        args.preset,
        out=Path(args.out) if args.out else None,
        runs_dir=runs_root(args),
        only=args.only,
        force=args.force,
        log_output=not args.quiet,
        progress_bar=not args.quiet,
    )
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """``runs check``: records whose stamps differ from the code's (made by code that has
    changed since: rerun to replace them); ``runs migrate``: re-key records in place."""
    from ussafety.paths import runs_dir

    root = Path(args.runs_dir) if args.runs_dir else runs_dir()
    if args.action == "migrate":
        from ussafety.records.migrate import migrate_dir

        log = migrate_dir(root, dry_run=args.dry_run)
        print(json.dumps({"n_moved": len(log["moved"]), "n_dropped": len(log["dropped"]), **log}, indent=1))
        return 0
    from ussafety.records.check import check_dir

    report = check_dir(root)
    print(json.dumps(report, indent=1))
    return 1 if report["stale"] or report["misfiled"] else 0


def cmd_validate_upload(args: argparse.Namespace) -> int:
    from ussafety.data.upload import validate_upload_report

    report = validate_upload_report(args.file, control_tokens=args.control_tokens)
    print(json.dumps(report, indent=1, ensure_ascii=False))
    return 0 if report["ok"] else 2


SHIPPED = {"params": "**/*.yaml", "notebooks": "*.ipynb"}
"""What ``ussafety init`` copies: ``ussafety/_shipped/<folder>`` (links to the checkout's
``params/`` and ``notebooks/``, shipped in the wheel as package data) -> ``DIR/<folder>``."""


def copy_shipped(target: Path, force: bool = False) -> dict[str, list[str]]:
    """Copy :data:`SHIPPED` out of the installed package into ``target``; files that exist are
    kept unless ``force`` (a user's edited preset is never overwritten silently). Returns the
    copied and the kept files (relative paths)."""
    import shutil
    from importlib.resources import as_file, files

    out: dict[str, list[str]] = {"copied": [], "kept": []}
    with as_file(files("ussafety") / "_shipped") as shipped:
        for folder, pattern in SHIPPED.items():
            src_root = Path(shipped) / folder
            sources = sorted(src_root.glob(pattern))
            if not sources:
                raise FileNotFoundError(f"{src_root}: no {pattern} shipped with this installation of ussafety")
            for src in sources:
                rel = Path(folder) / src.relative_to(src_root)
                dst = target / rel
                if dst.exists() and not force:
                    out["kept"].append(str(rel))
                    continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                out["copied"].append(str(rel))
    return out


def cmd_init(args: argparse.Namespace) -> int:
    """Copy the params presets and notebooks out of the installed package into ``args.dir``."""
    copied = copy_shipped(Path(args.dir), force=args.force)
    print(json.dumps({"dir": str(Path(args.dir).resolve()), **{k: len(v) for k, v in copied.items()}}, indent=1))
    return 0
