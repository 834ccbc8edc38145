# Vigil — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DATA ?= data/fraud
IMAGE ?= localhost/vigil:dev
PYTEST_ARGS ?=
# Programs the tests run, as command=Debian package (scripts/system-packages.sh installs them).
TEST_PROGRAMS := promtool=prometheus prometheus=prometheus redis-server=redis-server redis-cli=redis-tools \
	haproxy=haproxy prometheus-pushgateway=prometheus-pushgateway \
	prometheus-alertmanager=prometheus-alertmanager shellcheck=shellcheck \
	java=openjdk-17-jre-headless podman=podman runc=runc mmdebstrap=mmdebstrap catatonit=catatonit \
	/usr/lib/podman/netavark=netavark /usr/lib/podman/aardvark-dns=aardvark-dns
PACKAGES := vigil feature_store components rollout inference monitoring pipelines vigil_cli bench

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

.PHONY: setup
setup: $(VENV)/.installed ## Create .venv and install Vigil with its dev extras (pinned by constraints.txt).

.PHONY: demo
demo: setup ## Simulate data, run the training pipeline locally, serve the model and score examples.
	$(BIN)/python -m vigil_cli.demo --data $(DATA)

.PHONY: system-packages
system-packages: ## Install the Debian packages the tests need (apt-get, as root), when missing.
	@scripts/system-packages.sh $(TEST_PROGRAMS)

.PHONY: test
test: setup system-packages ## Run the full test suite (unit, integration, e2e) — what CI runs.
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: lint
lint: setup ## ruff, mypy and the layer contract (import-linter).
	$(BIN)/ruff check .
	$(BIN)/mypy $(wildcard $(PACKAGES))
	$(BIN)/lint-imports

.PHONY: compile
compile: setup ## Recompile the KFP pipelines into their committed YAML.
	$(BIN)/python -m pipelines.compile

.PHONY: manifests
manifests: setup ## Render manifests/ (kubectl apply -f / -k) from the Helm chart charts/vigil.
	$(BIN)/python scripts/render_manifests.py

.PHONY: image
image: ## Build Vigil's image (components/Dockerfile) with podman on a local Debian base (mmdebstrap).
	scripts/build-image.sh $(IMAGE)

.PHONY: kind-up
kind-up: setup ## A kind cluster with KServe (Standard), the Prometheus Operator and Vigil's chart; one prediction.
	scripts/kind-up.sh

.PHONY: bench
bench: setup ## Run the benchmarks; results go to bench/results/*.json.
	$(BIN)/python -m bench.run

.PHONY: clean
clean: ## Remove local state (.vigil, data) but keep the venv.
	rm -rf .vigil data
