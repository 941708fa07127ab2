# Entry points: `make test` (the whole suite, installing what it needs) and `make run`
# (the whole system as local processes). See README.md.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help deps venv test lint run bench clean

help:
	@echo "make test   - install what is missing, then run every test against real servers"
	@echo "make run    - run the API, workers, beat and their servers locally (Ctrl-C stops)"
	@echo "make bench  - measure raw MongoDB reads vs uncached vs cached API reads"
	@echo "make lint   - ruff"

deps:
	@scripts/install-system-deps.sh

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

venv: $(STAMP)

test: deps venv
	$(BIN)/ruff check app devstack tests benchmarks
	$(BIN)/pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check app devstack tests benchmarks
	$(BIN)/ruff format --check app devstack tests benchmarks

run: deps venv
	$(BIN)/python -m devstack

bench: deps venv
	$(BIN)/python -m benchmarks.read_path

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis benchmarks/results
