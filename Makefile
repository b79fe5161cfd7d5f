# The two commands of the README: `make demo` and `make test`. Each builds the virtualenv first, with
# only the extras it needs, so that a first `make demo` does not wait for the test tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: help demo test lint format install benchmark

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed-%: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$*]'
	touch $@

install: $(VENV)/.installed-test ## the virtualenv with the test tools

demo: $(VENV)/.installed-demo ## the dashboard on embedded defaults, watching a small live system
	$(BIN)/python -m demo

lint: $(VENV)/.installed-test ## ruff (lint and format), mypy and the import-linter layer contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	SECRET_KEY=$${SECRET_KEY:-make-lint-only-key} $(BIN)/mypy
	$(BIN)/lint-imports

format: $(VENV)/.installed-test ## rewrite the code as ruff formats and fixes it
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint ## lint, then the whole test suite (PYTEST_ARGS passes options to pytest)
	SECRET_KEY=$${SECRET_KEY:-make-test-only-key} $(BIN)/python -m pytest $(PYTEST_ARGS)

benchmark: $(VENV)/.installed-test ## span ingestion (the README lists the other benchmarks)
	$(BIN)/python -m benchmarks.ingest
