# Every target sets itself up: the virtualenv in .venv is created and the project
# installed (with the serving and dev extras) on first use, and again when
# pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
MODELS := serving/models/fraud/1/saved_model.pb serving/models/fraud/2/saved_model.pb
# The bridge as shipped: the runtime dependencies only, for the bridge processes that the
# tests, demo, bench and chaos start (memory and start-up measured without the dev extras).
RUNTIME_VENV  := .venv-runtime
RUNTIME_STAMP := $(RUNTIME_VENV)/.installed
export BRIDGE_RUNTIME_PYTHON := $(CURDIR)/$(RUNTIME_VENV)/bin/python
# TF Serving wants absolute base paths; the committed configs name the container's
# /models, so local runs get a copy pointing at this checkout.
LOCAL_CONFIG := out/models.local.config
GRPC_PORT ?= 8500
REST_PORT ?= 8501

.DEFAULT_GOAL := help
.PHONY: help venv test test-unit serve models proto lint demo bench chaos clean stunnel

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[serving,dev]'
	touch $(STAMP)

$(RUNTIME_STAMP): pyproject.toml
	test -x $(RUNTIME_VENV)/bin/python || $(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RUNTIME_VENV)/bin/python -m pip install --quiet -e .
	touch $(RUNTIME_STAMP)

venv: $(STAMP) $(RUNTIME_STAMP) ## Create .venv (the project with its extras) and .venv-runtime (the bridge alone)

$(MODELS) &: $(STAMP) serving/demo_model.py
	$(PY) -m serving.demo_model --output serving/models/fraud

models: $(MODELS) ## Train the demo model and export SavedModel versions 1 and 2

$(LOCAL_CONFIG): serving/models.config
	mkdir -p out
	sed 's#"/models/#"$(CURDIR)/serving/models/#' serving/models.config > $@

# The TLS tests put stunnel4 (Debian) in front of the dev broker: installed here when it is
# missing and this is root on Debian; otherwise those tests skip and say why.
stunnel:
	@command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq && apt-get install -y -qq stunnel4 >/dev/null; } || \
	  echo "stunnel4 is not installed: the TLS tests will skip"

test: $(STAMP) $(RUNTIME_STAMP) $(MODELS) stunnel ## Run every test (unit and integration)
	$(PY) -m pytest

test-unit: $(STAMP) ## Run the unit tests only (no sockets, no subprocesses)
	$(PY) -m pytest -m "not integration"

serve: $(STAMP) $(MODELS) $(LOCAL_CONFIG) ## Start the local TF Serving-compatible server on 8500/8501
	$(PY) -m serving --port=$(GRPC_PORT) --rest_api_port=$(REST_PORT) \
	    --model_config_file=$(LOCAL_CONFIG) --allow_version_labels_for_unavailable_models \
	    --enable_batching --batching_parameters_file=serving/batching.config \
	    --monitoring_config_file=serving/monitoring.config

demo: $(STAMP) $(RUNTIME_STAMP) $(MODELS) ## Run everything end to end on one machine and print a summary
	$(PY) -m tools.demo

bench: $(STAMP) $(RUNTIME_STAMP) $(MODELS) ## Measure the bridge beside its two limits (direct calls, pass-through)
	$(PY) -m tools.bench

chaos: $(STAMP) $(RUNTIME_STAMP) $(MODELS) ## Long fault runs (kill -9, outages, broker stalls, churn, fuzz), one table
	$(PY) -m tools.chaos

proto: $(STAMP) ## Regenerate bridge/wire from proto/ (leaves git diff clean)
	$(PY) proto/generate.py

lint: $(STAMP) ## ruff on everything, mypy --strict on bridge/, serving/ and tools/
	$(VENV)/bin/ruff check bridge serving tests proto tools
	$(VENV)/bin/ruff format --check bridge serving tests proto tools
	$(VENV)/bin/mypy bridge serving tools

clean: ## Remove the virtualenv, generated models and run output
	rm -rf $(VENV) $(RUNTIME_VENV) serving/models out
