# spotfleet — the commands the README names. Every target sets up what a fresh
# machine lacks first, so `make test` and `make demo` work from a clean clone.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help setup system-deps venv tools test test-fast lint crds docs demo bench image clean rules-test

help:
	@echo "make demo   - set up everything, then run 'spotfleet demo' (local control plane, stand-in cloud, operator)"
	@echo "make test   - set up everything, then lint and run every test tier CI runs"
	@echo "make lint   - ruff, mypy --strict on both packages, import-linter contracts"
	@echo "make crds   - regenerate crds/ from the pydantic models"
	@echo "make bench  - run the benchmarks in bench/ (print figures; never asserted)"

setup: system-deps venv tools

system-deps:
	@bash hack/system-deps.sh

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

tools:
	@bash hack/tools.sh >/dev/null

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy engine/spotfleet_engine operator/spotfleet_operator sim/spotfleet_sim
	$(BIN)/lint-imports

# All tiers CI runs (unit, component, integration, e2e). pytest's exit code 5
# (no tests collected) is a failure here like any other non-zero code.
test: setup lint
	$(BIN)/pytest

test-fast: venv
	$(BIN)/pytest -m "not integration and not e2e"

crds: venv
	$(BIN)/python -m spotfleet_operator.api.crdgen --out crds/spotpolicies.spotfleet.dev.yaml
	$(BIN)/python -m spotfleet_operator.api.docgen --out docs/api.md

# The chart's alerts: promtool check + unit tests on the rules helm renders.
rules-test: venv
	$(BIN)/pytest -q -p no:randomly tests/e2e/test_chart_rules.py

demo: setup
	$(BIN)/spotfleet demo

bench: venv
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

image:
	docker build -t spotfleet:dev .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
