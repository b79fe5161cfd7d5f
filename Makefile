# The two commands of the README: `make demo` and `make test`. Each builds the virtualenv first, with
# only the extras it needs, so that a first `make demo` does not wait for the test tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install benchmark

$(VENV)/.installed-%: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$*]'
	touch $@

install: $(VENV)/.installed-test

demo: $(VENV)/.installed-demo
	$(BIN)/python -m demo

test: $(VENV)/.installed-test
	SECRET_KEY=$${SECRET_KEY:-make-test-only-key} $(BIN)/python -m pytest $(PYTEST_ARGS)

benchmark: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks.ingest
