# Davit — the verbs people expect. `make help` lists them.
SHELL := bash
.DEFAULT_GOAL := help

VENV      ?= .venv
PY        := $(VENV)/bin/python
export DAVIT_CACHE ?= $(HOME)/.cache/davit
# State of the running local cluster (kubeconfig, operator log) lives here, inside the checkout.
export DAVIT_STATE ?= $(CURDIR)/.run
export KUBECONFIG_LOCAL := $(DAVIT_STATE)/kubeconfig

.PHONY: help install lint typecheck test unit e2e up down kind-up kind-down crds cluster-build bench bench-runtime proto

help: ## list the verbs
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q uv

install: $(PY) ## create .venv and install the project with every extra (torch is reused from uv's cache)
	$(VENV)/bin/uv pip install -q -p $(PY) -e ".[dev]"
	@$(PY) -c 'import torch, kopf, lightkube; print("install: torch", torch.__version__, "kopf", kopf.__version__ if hasattr(kopf, "__version__") else "ok")'

lint: ## ruff
	$(VENV)/bin/ruff check operator runtime tests e2e
	$(VENV)/bin/ruff format --check operator runtime tests e2e

typecheck: ## mypy --strict
	$(VENV)/bin/mypy

crds: ## regenerate crds/ from the pydantic models
	$(PY) -m davit_operator.crdgen crds/

unit: ## unit and component tests (no cluster)
	$(PY) -m pytest tests

cluster-build: ## build the local control plane binaries from Go modules (cached by version)
	bash e2e/cluster/build.sh

e2e: cluster-build ## e2e tests against the local control plane (started and stopped by the suite)
	$(PY) -m pytest -m e2e e2e

test: lint typecheck unit e2e ## everything CI runs: lint, types, unit/component tests, e2e on the local control plane

up: cluster-build ## local cluster + CRD + operator + a sample ModelDeployment, then `kubectl get md`
	bash e2e/cluster/up.sh
	bash e2e/cluster/run-sample.sh

down: ## stop the local cluster and the operator, remove their state
	bash e2e/cluster/down.sh

kind-up: ## the same on kind (needs Docker): cluster, fake GPU nodes, CRD, operator, sample
	bash e2e/cluster/kind-up.sh

kind-down: ## delete the kind cluster
	kind delete cluster --name davit

bench-runtime: ## runtime benchmark against Triton, KServe, MLServer (minutes; not part of test)
	$(PY) -m davit_runtime.bench.run

bench: bench-runtime ## all benchmarks
