# One entry point for people and CI: every target builds .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint lint-deploy bench soak clean browser screenshots

# The same script builds the container image (Dockerfile): one install, tested here.
$(STAMP): pyproject.toml scripts/install.sh scripts/fetch_smart_turn.py
	PYTHON=$(PYTHON) bash scripts/install.sh venv $(VENV) dev
	touch $(STAMP)

# A first run gets a .env from the example; the server says what to fill in.
serve: $(STAMP)
	test -f .env || cp .env.example .env
	$(BIN)/callbridge serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy --strict src

# Container and orchestration files: no container runtime here, so they are linted.
lint-deploy: $(STAMP)
	$(BIN)/hadolint Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml
	$(BIN)/kubernetes-validate --strict --quiet -k 1.30.0 deploy/kubernetes/callbridge.yaml

test: lint lint-deploy browser
	$(BIN)/python -m pytest

# The dashboard's browser tests drive Debian's chromium; installed here when missing.
browser:
	scripts/test-browser.sh

# Re-take the README's dashboard screenshots (the browser tests write them).
screenshots: $(STAMP) browser
	DASHBOARD_SCREENSHOTS=docs/dashboard $(BIN)/python -m pytest tests/dashboard -q

# The quick benchmarks; the load benchmark (minutes) is `$(BIN)/python bench/load.py`.
bench: $(STAMP)
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/bargein.py

# Calls under random vendor faults (minutes; not part of `make test`):
# `make soak SOAK_ARGS="10 60"` for a short run (calls, seconds, fault rate, seed).
SOAK_ARGS ?= 50 300 0.15
soak: $(STAMP)
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
