# One entry point for people and CI: every target builds .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint bench clean

$(STAMP): pyproject.toml scripts/fetch_smart_turn.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python scripts/fetch_smart_turn.py
	touch $(STAMP)

# A first run gets a .env from the example; the server says what to fill in.
serve: $(STAMP)
	test -f .env || cp .env.example .env
	$(BIN)/callbridge serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy --strict src

test: lint
	$(BIN)/python -m pytest

# The quick benchmarks; the load benchmark (minutes) is `$(BIN)/python bench/load.py`.
bench: $(STAMP)
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/bargein.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
