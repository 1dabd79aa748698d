# Every target creates the environment first when it is missing.
PYTHON ?= python3
VENV ?= .venv
# Installed only when the environment has no torch yet. Machines with a local CPU wheel of this
# version get it from disk; elsewhere pick your build, e.g.
#   make test TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
CONFIG ?= configs/mt.yaml
ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install fit test test-fast lint format bench bench-smoke clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@# A torch already importable by $(PYTHON) is reused instead of installing another.
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "reusing the torch of $(PYTHON)"; $(PYTHON) -m venv --system-site-packages $(VENV); \
	else $(PYTHON) -m venv $(VENV); fi
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

install: $(STAMP)  ## create .venv with mtfilter and its test tools

fit: $(STAMP)  ## train one run: make fit CONFIG=configs/st.yaml ARGS="--trainer.max_epochs 50"
	@# make exits 2 whenever a recipe fails: say the command's own status (128+N: stopped by signal N)
	@$(BIN)/mtfilter fit --config $(CONFIG) $(ARGS) || { status=$$?; \
		echo "make: mtfilter fit exited with status $$status (see mtfilter --help)" >&2; \
		exit $$status; }

test: $(STAMP)  ## run the test suite (CPU, 10-15 minutes on 2 cores)
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(STAMP)  ## the suite without the tests marked slow (over ~10 s each): the inner loop
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

bench: $(STAMP)  ## timings side by side with plain PyTorch (~22 min on 2 CPU cores); ARGS="--device cuda"
	$(BIN)/python -m benchmarks.run $(ARGS)

bench-smoke: $(STAMP)  ## seconds: the benchmarks still run (CI)
	$(BIN)/python -m benchmarks.run --smoke

lint: $(STAMP)  ## ruff check, format check and the type checker
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:  ## remove the environment and caches (run output in lightning_logs/ stays)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
