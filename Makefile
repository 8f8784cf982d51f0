# The two commands a newcomer needs: `make run` and `make test`.
# Both bootstrap what is missing (a .venv with the project installed) first.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= ./data
PORT ?= 8080
# The dashboard's JavaScript libraries: pinned by dashboard/package-lock.json, installed by
# `npm ci` (never committed), and the files the page loads copied into static/vendor/.
DASH := dashboard
VENDOR := $(DASH)/static/vendor
VENDOR_STAMP := $(VENDOR)/.installed
VENDOR_FILES := force-graph/dist/force-graph.min.js 3d-force-graph/dist/3d-force-graph.min.js \
	uplot/dist/uPlot.iife.min.js uplot/dist/uPlot.min.css \
	redoc/bundles/redoc.standalone.js
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test lint typecheck unit bench clean browser tools lock model

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(VENDOR_STAMP): $(DASH)/package.json $(DASH)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: npm not found (the dashboard's libraries come from npm)"; exit 1; }
	cd $(DASH) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	mkdir -p $(VENDOR)
	cp $(addprefix $(DASH)/node_modules/,$(VENDOR_FILES)) $(VENDOR)/
	touch $@

# The browser tests drive Debian's chromium (Playwright's own download cannot work here).
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "warning: $(CHROMIUM) missing and not root: the browser tests will be skipped"; fi; \
	fi

# The local model's int8 rewrite and word table in the cache dir (docs/retrieval.md); a
# no-op once they are there and verified.
model: $(STAMP)
	$(BIN)/memorose --log-level WARNING prepare-model

run: $(STAMP) $(VENDOR_STAMP) model
	$(BIN)/memorose up --data-dir $(DATA_DIR) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check memorose node gateway dashboard tests benchmarks
	$(BIN)/ruff format --check memorose node gateway dashboard tests benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) $(VENDOR_STAMP) browser tools lint typecheck model
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

# promtool (Debian's `prometheus` package) checks and unit-tests the alert rules. Installed
# only when missing and running as root with apt-get; otherwise those tests skip, or fail
# under CI=1 (.ci/run exports it).
tools:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing promtool (apt-get install prometheus)"; \
	    apt-get update -qq >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "promtool not found and not root: alert rule tests will be skipped"; fi; }

# Pin the image's runtime dependencies to what this environment tested (deploy/requirements.lock).
lock: $(STAMP)
	$(BIN)/python deploy/tools/lock.py

bench: $(STAMP)
	$(BIN)/memorose bench storage

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache $(DASH)/node_modules $(VENDOR)
