# Entry points: `make up` (the whole stack under docker compose, healthy) and `make test`
# (every test, installing what it needs); `make check` is the fast loop. See README.md.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_PATHS := app devstack tests benchmarks infra ansible fleet topology scripts
# make check: test files spread over this many pytest processes, each with its own servers.
CHECK_WORKERS ?= 2

.PHONY: help deps lock lock-check venv test check lint topology up down env local-images infra-venv release rollback stack-named lab-up lab-down run bench clean

help:
	@echo "make up     - the whole stack under docker compose, healthy (installs Docker if missing);"
	@echo "              on a running stack, the update: API replicas replaced one at a time"
	@echo "make down   - stop it (data volumes are kept)"
	@echo "make test   - install what is missing, then run every test against real servers"
	@echo "make check  - lint, unit, service and infra tests (no lab, no e2e): the fast loop"
	@echo "make env    - write .env with freshly generated secrets (never overwrites)"
	@echo "make local-images - build every image from Debian packages (no registry needed)"
	@echo "make run    - the API, workers, beat and their servers as local processes (no Docker)"
	@echo "make infra-venv - the virtualenv the Pulumi program runs in (.venv-infra)"
	@echo "make release STACK=dev - build, push and deploy this checkout to a Pulumi stack"
	@echo "make rollback STACK=dev - deploy the stack's previous image again (fleet rollback)"
	@echo "fleet VERB  - operate an environment: setup, deploy, rollback, maintain, health, logs, details, audit, lock, unlock"
	@echo "make lab-up / lab-down - a local multi-host lab (containers acting as VMs) for Ansible"
	@echo "make bench  - request paths, light and heavy scenarios, held connections; targets met or not in benchmarks/results/"
	@echo "make lint   - ruff"
	@echo "make lock   - every install's lock from the *.in files (UPGRADE=1: the newest of all; UPGRADE=NAME: one)"
	@echo "make topology - write Ansible's copy of topology/ (ansible/group_vars/all/topology.yml)"

deps:
	@scripts/install-system-deps.sh

# Every install comes from a lock (scripts/lock.py): every package pinned, with its hashes.
# UPGRADE=1 takes the newest version of everything, UPGRADE="NAME ..." of those packages.
lock:
	$(PYTHON) scripts/lock.py compile $(if $(filter 1 all,$(UPGRADE)),--upgrade,$(foreach name,$(UPGRADE),--upgrade-package $(name)))

# A missing or stale lock stops every install, and says `make lock`.
lock-check:
	@$(PYTHON) scripts/lock.py check

# From the lock alone: a fresh virtualenv each time the lock changes, so nothing an older
# lock installed stays behind.
$(STAMP): requirements-dev.txt pyproject.toml | lock-check
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .   # fleet and fleet-health (setuptools from the lock)
	@touch $@

venv: lock-check $(STAMP)

# Every test, in two runs, each ending with the time of its tiers: first lint, unit, service and
# infra, file by file in CHECK_WORKERS processes (as make check); then the e2e and lab tiers
# alone, which share one compose stack and one lab and want the whole machine. The second runs
# even when the first failed (not when it was interrupted or misused: pytest's 2), and the exit
# code is a failure if either did (a run that PYTEST_ARGS left without a test, pytest's 5, is not).
test: deps venv
	@started=$$(date +%s); \
	$(BIN)/ruff check $(LINT_PATHS) && $(BIN)/ruff format --check $(LINT_PATHS) || exit 1; \
	LINT_SECONDS=$$(( $$(date +%s) - started )) \
	  $(BIN)/pytest -m "not lab and not e2e" -n $(CHECK_WORKERS) --dist loadfile $(PYTEST_ARGS); first=$$?; \
	[ $$first -ne 2 ] || exit 2; \
	$(BIN)/pytest -m "lab or e2e" $(PYTEST_ARGS); second=$$?; \
	took=$$(( $$(date +%s) - started )); echo "make test: $$(( took / 60 )) min $$(( took % 60 )) s in all"; \
	exit $$(( (first != 0 && first != 5) || (second != 0 && second != 5) ))

# Everything but the lab and the compose stack (the e2e and lab markers), file by file in
# parallel: most of these tests wait on servers rather than use the CPU.
check: deps venv lint
	$(BIN)/pytest -m "not lab and not e2e" -n $(CHECK_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

# The tiers, ports, commands and environment contract are written in topology/ (Python);
# Ansible reads this generated copy, and tests/test_topology.py fails while it is stale.
topology: venv
	$(BIN)/python -m topology

up:
	@scripts/up.sh

down:
	docker compose down

env:
	@python3 scripts/envfile.py generate

local-images:
	@scripts/local-images.sh

# Pulumi.yaml names .venv-infra; created here from infra/requirements.txt (Pulumi would
# otherwise fill it from the top-level requirements.txt, which is the app's).
infra-venv: lock-check .venv-infra/.installed

.venv-infra/.installed: infra/requirements.txt | lock-check
	$(PYTHON) -m venv --clear .venv-infra
	.venv-infra/bin/pip install --quiet --require-hashes -r infra/requirements.txt
	@touch $@

release: stack-named venv infra-venv
	scripts/release.sh

rollback: stack-named venv
	PULUMI_STACK=$(STACK) $(BIN)/fleet rollback

stack-named:
	@test -n "$(STACK)" || { echo "error: name the Pulumi stack: make $(MAKECMDGOALS) STACK=dev" >&2; exit 2; }

lab-up: deps venv
	$(BIN)/python ansible/lab/lab.py up

lab-down: venv
	$(BIN)/python ansible/lab/lab.py down

run: deps venv
	$(BIN)/python -m devstack

bench: deps venv
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-infra .venv-lock .pytest_cache .ruff_cache .hypothesis benchmarks/results
