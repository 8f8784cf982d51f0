# The two commands a newcomer needs: `make run` and `make test`.
# Both bootstrap what is missing (a .venv with the project installed) first.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= ./data
PORT ?= 8080

.PHONY: run test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/memorose up --data-dir $(DATA_DIR) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check memorose node gateway tests benchmarks
	$(BIN)/ruff format --check memorose node gateway tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(BIN)/memorose bench storage

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
