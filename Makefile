# companion-hub: every target bootstraps its own virtualenv with pinned dependencies.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit fuzz bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Run the hub with a simulated Companion (or a real one: make demo ARGS='--companion HOST').
demo: $(STAMP)
	$(BIN)/companion-hub demo $(ARGS)

## The whole test suite: lint, type-check, tests.
test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

## Long fuzzing run (the same fuzz tests as `make test`, with many more examples).
fuzz: $(STAMP)
	HUB_FUZZ_EXAMPLES=$${HUB_FUZZ_EXAMPLES:-20000} $(BIN)/pytest -q -m fuzz -p no:cacheprovider

## Benchmarks (see bench/README.md).
bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
