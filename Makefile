# spotfleet — the commands the README names. Every target sets up what a fresh
# machine lacks first, so `make test` and `make demo` work from a clean clone.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The venv holds exactly uv.lock (extras dev, group build; plus the pip and setuptools
# that python -m venv seeds): re-synced when pyproject.toml or uv.lock changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml uv.lock | sha1sum | cut -c1-12)
# uv itself, from PyPI, at the version pyproject's tool.uv.required-version names.
UV_VERSION := $(shell sed -n 's/^required-version = "==\(.*\)"$$/\1/p' pyproject.toml)
UV := $(BIN)/uv
IMAGE ?= localhost/spotfleet:dev

.PHONY: help setup system-deps uv-bootstrap venv lock tools node-tools test test-fast lint crds dashboard docs demo bench image kind clean rules-test

help:
	@echo "make demo   - set up everything, then run 'spotfleet demo' (local control plane, stand-in cloud, operator)"
	@echo "make test   - set up everything, then lint and run every test tier CI runs"
	@echo "make lint   - ruff, mypy --strict on both packages, import-linter contracts"
	@echo "make crds   - regenerate crds/ from the pydantic models"
	@echo "make dashboard - regenerate the chart's Grafana dashboard with grafana-foundation-sdk"
	@echo "make bench  - run the benchmarks in bench/ (print figures; never asserted)"
	@echo "make node-tools - build kubelet, kube-proxy, kube-scheduler, kube-controller-manager for the e2e node (make test runs it)"
	@echo "make image  - build the operator image with buildah on a local Debian base (docs/image.md)"
	@echo "make kind   - your own kind cluster: the image, both charts, a dry-run policy (hack/kind-up.sh; not run in CI)"
	@echo "make lock   - re-resolve uv.lock and re-export requirements/*.txt (the only way a dependency changes)"

setup: system-deps venv tools

system-deps:
	@bash hack/system-deps.sh

# uv is bootstrapped into the venv with pip once (a venv with another uv is made anew:
# a new uv version changes pyproject.toml, hence the stamp, so the sync below runs).
uv-bootstrap:
	@if ! $(UV) --version 2>/dev/null | grep -q '^uv $(UV_VERSION) '; then \
	  rm -rf $(VENV) && $(PY) -m venv $(VENV) && $(BIN)/pip install -q 'uv==$(UV_VERSION)'; fi

# The locked build group goes in first, so the editable install is built by the locked
# hatchling (no build isolation), then everything else, exactly as locked: --locked
# refuses a uv.lock that no longer matches pyproject.toml (run `make lock`).
$(STAMP): pyproject.toml uv.lock | uv-bootstrap
	@UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync -q --locked --inexact --only-group build --no-install-project
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync -q --locked --extra dev --group build
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

# Re-resolve (add UV_LOCK_ARGS='--upgrade-package boto3' or '--upgrade' to move versions),
# then export what the image installs: requirements/runtime.txt (the runtime
# dependencies, no extras) and requirements/build.txt (hatchling), both hash-pinned.
lock: uv-bootstrap
	$(UV) lock $(UV_LOCK_ARGS)
	$(UV) export -q --frozen --no-emit-project --no-dev -o requirements/runtime.txt
	$(UV) export -q --frozen --no-emit-project --only-group build -o requirements/build.txt

tools:
	@bash hack/tools.sh >/dev/null

# kubelet, kube-proxy, kube-scheduler, kube-controller-manager and hack/pause for the
# e2e test's real node (docs/testing.md#the-real-node); `make demo` does not need them.
node-tools:
	@bash hack/tools.sh node >/dev/null

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy engine/spotfleet_engine operator/spotfleet_operator sim/spotfleet_sim
	$(BIN)/lint-imports

# All tiers CI runs (unit, component, integration, e2e). pytest's exit code 5
# (no tests collected) is a failure here like any other non-zero code.
test: setup node-tools lint
	$(BIN)/pytest --durations=30

test-fast: venv
	$(BIN)/pytest -m "not integration and not e2e"

crds: venv
	$(BIN)/python -m spotfleet_operator.api.crdgen --out crds/spotpolicies.spotfleet.dev.yaml
	$(BIN)/python -m spotfleet_operator.api.docgen --out docs/api.md

# The chart's Grafana dashboard, built by tools/spotfleet_cli/dashboard.py with the locked
# grafana-foundation-sdk (docs/metrics.md#the-grafana-dashboard).
dashboard: venv
	$(BIN)/python -m spotfleet_cli.dashboard --out charts/spotfleet/dashboards/spotfleet.json

# The chart's alerts: promtool check + unit tests on the rules helm renders.
rules-test: venv
	$(BIN)/pytest -q -p no:randomly tests/e2e/test_chart_rules.py

demo: setup
	$(BIN)/spotfleet demo

bench: venv
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# buildah + a debootstrapped Debian base made here (no registry, no Docker engine).
image: system-deps
	IMAGE=$(IMAGE) bash hack/image.sh

# a kind cluster of your own with the image, both charts and a dry-run policy (not run in CI: see the README)
kind: system-deps
	IMAGE=$(IMAGE) bash hack/kind-up.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
