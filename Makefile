# Davit — the verbs people expect. `make help` lists them.
SHELL := bash
.DEFAULT_GOAL := help

VENV      ?= .venv
PY        := $(VENV)/bin/python
export DAVIT_CACHE ?= $(HOME)/.cache/davit
# State of the running local cluster (kubeconfig, operator log) lives here, inside the checkout.
export DAVIT_STATE ?= $(CURDIR)/.run

.PHONY: help install lint typecheck test unit e2e up down kind-up kind-down crds cluster-build bench bench-runtime bench-operator bench-router chart-lint proto

help: ## list the verbs
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

INSTALLED := $(VENV)/.installed

$(PY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q uv

# Re-installs only when pyproject.toml changed; uv reuses its cache, so torch (several GB, a CUDA
# build from PyPI) is downloaded once per machine, not once per checkout.
$(INSTALLED): pyproject.toml | $(PY)
	@[ -x $(VENV)/bin/uv ] || { $(PY) -m ensurepip >/dev/null && $(PY) -m pip install -q uv; }
	$(VENV)/bin/uv pip install -p $(PY) -e ".[dev]"
	@touch $@

install: $(PY) ## create .venv and install the project with every extra, from the registries
	@rm -f $(INSTALLED)
	@$(MAKE) --no-print-directory $(INSTALLED)

lint: $(INSTALLED) ## ruff
	$(VENV)/bin/ruff check operator runtime tests e2e
	$(VENV)/bin/ruff format --check operator runtime tests e2e

typecheck: $(INSTALLED) ## mypy --strict
	$(VENV)/bin/mypy

crds: $(INSTALLED) ## regenerate crds/ (and the chart's copy) from the pydantic models
	$(PY) -m davit_operator.crdgen crds/ charts/davit/crds/

unit: $(INSTALLED) ## unit and component tests (no cluster)
	$(PY) -m pytest tests

cluster-build: ## build the local control plane binaries from Go modules (cached by version)
	bash e2e/cluster/build.sh

# The suite gets a cluster of its own (its own DAVIT_STATE), so `make up`'s operator never
# handles its objects; DAVIT_E2E_KUBECONFIG=path runs it on another cluster instead (kind).
e2e: $(INSTALLED) cluster-build ## e2e tests on a local control plane of their own (started and stopped)
	DAVIT_STATE=$(DAVIT_STATE)/e2e $(PY) -m pytest -m e2e e2e

test: lint typecheck unit e2e ## everything CI runs: lint, types, unit/component tests, e2e on the local control plane

up: $(INSTALLED) cluster-build ## local cluster + CRD + operator + a sample ModelDeployment, then `kubectl get md`
	bash e2e/cluster/up.sh
	bash e2e/cluster/run-sample.sh

down: ## stop the local cluster and the operator, remove their state
	bash e2e/cluster/down.sh

kind-up: $(INSTALLED) ## the same on kind (needs Docker): cluster, fake GPU nodes, CRD, operator, sample
	bash e2e/cluster/kind-up.sh
	bash e2e/cluster/run-sample.sh

chart-lint: ## helm lint the chart (builds helm from Go modules on first use)
	bash e2e/cluster/build.sh helm
	source e2e/cluster/env.sh && helm lint charts/davit

kind-down: ## delete the kind cluster
	kind delete cluster --name davit

proto: $(INSTALLED) ## regenerate the gRPC modules from runtime/davit_runtime/protocol/inference.proto
	$(PY) -m davit_runtime.protocol.generate

# BENCH_ARGS=--quick: Davit and Triton only, MLP, c=1 and 32, 3 s points (a smoke run).
bench-runtime: $(INSTALLED) ## runtime benchmark vs Triton, KServe, MLServer (~17 min; not in test)
	$(VENV)/bin/uv pip install -q -p $(PY) -e ".[dev,bench]"
	$(PY) runtime/bench/run.py $(BENCH_ARGS)

# BENCH_ARGS, e.g. --sizes 100 --idle 30 for a smoke run; a cluster of its own under .run/opbench.
bench-operator: $(INSTALLED) cluster-build ## operator vs the Deployment controller, N=100/300/1000 (~40 min; not in test)
	$(VENV)/bin/uv pip install -q -p $(PY) -e ".[dev,bench]"
	$(PY) e2e/opbench/run.py $(BENCH_ARGS)

# BENCH_ARGS, e.g. --duration 3 for a smoke run; installs wrk, haproxy and nginx-light (Debian).
bench-router: $(INSTALLED) ## davit-router vs HAProxy on one core, static backends (~2 min; not in test)
	$(VENV)/bin/uv pip install -q -p $(PY) -e ".[dev,bench]"
	$(PY) runtime/bench/router_run.py $(BENCH_ARGS)

bench: bench-runtime bench-operator bench-router ## all benchmarks
