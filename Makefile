# One toolchain, run the same way locally and in CI: `make test` builds .venv from nothing, then lints,
# type-checks and runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.firm-installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.venv/torch_extensions

.PHONY: install test lint typecheck unit format clean

install: $(STAMP)

$(STAMP): pyproject.toml plugins/firm-example/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]' -e plugins/firm-example
	touch $(STAMP)

lint: install
	$(BIN)/ruff check src tests plugins benchmarks
	$(BIN)/ruff format --check src tests plugins benchmarks

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: lint typecheck unit

format: install
	$(BIN)/ruff check --fix src tests plugins benchmarks
	$(BIN)/ruff format src tests plugins benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
