# Two commands on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train test test-fast lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing ddpm-lab and its dependencies into $(VENV) (once; a few minutes, mostly torch)..."
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/ddpm-train $(ARGS)

# Tests run on 2 workers; the notebooks run after them, one at a time and small (each trains models).
test: $(STAMP)
	WANDB_MODE=offline WANDB_SILENT=true $(BIN)/python -m pytest -n 2 --dist loadgroup --durations=15 $(PYTEST_ARGS) tests
	WANDB_MODE=offline WANDB_SILENT=true DDPM_LAB_NOTEBOOK_FAST=1 $(BIN)/python -m pytest --nbmake --nbmake-timeout=600 $(PYTEST_ARGS) notebooks

# The edit-test loop: everything not marked slow (no training runs, sweeps or clusters), about a minute.
test-fast: $(STAMP)
	WANDB_MODE=offline WANDB_SILENT=true $(BIN)/python -m pytest -n 2 -m "not slow" $(PYTEST_ARGS) tests

lint: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pre-commit run --all-files

format: $(STAMP)
	$(BIN)/ruff format src tests && $(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
