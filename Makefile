# Herald. `make run` brings the system up locally; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install services run test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	@touch $(STAMP)

install: $(STAMP)

services:
	@scripts/ensure-services.sh

run: install services
	@scripts/run-local.sh

test: install services
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy api workers providers shared
	$(BIN)/lint-imports

# The Helm chart: lint and render it (helm-python-sdk, no helm binary) for every deploy/helm/herald/ci/*.yaml,
# validate the manifests strictly (kubernetes-validate) and assert its properties. Also part of `make test`.
.PHONY: helm-lint
helm-lint: install
	$(BIN)/python -m pytest -q tests/deploy/test_helm.py

bench: install services
	$(BIN)/python -m bench.run

# The console's pages and list endpoints against 100k deliveries and 10k dead letters (bench/console.py).
.PHONY: bench-console
bench-console: install services
	$(BIN)/python -m bench.console

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache *.egg-info

# The fault run (bench/faults.py): worker/API/beat SIGKILL, Redis FLUSHALL and SIGKILL, PostgreSQL restart,
# receiver 503/429 storms and a hanging receiver, on a PostgreSQL and a Redis of its own. Exits 1 if anything
# accepted was lost. A short version runs in `make test` (tests/integration/test_faults.py).
.PHONY: faults
faults: install
	$(BIN)/python -m bench.faults
