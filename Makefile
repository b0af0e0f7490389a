# Every target creates and uses .venv itself: a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

JS := clients/js
JS_STAMP := $(JS)/node_modules/.installed

.PHONY: install run test test-fast fuzz lint typecheck check clean browser

# The client is a distribution of its own (clients/python); both are installed editable.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./clients/python -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The TypeScript SDK's dependencies, exactly as package-lock.json pins them.
$(JS_STAMP): $(JS)/package-lock.json
	npm ci --prefix $(JS) --no-audit --no-fund
	touch $(JS_STAMP)

# Chromium for the SDK's browser test, from the system's packages (never a downloaded browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }

# `make run PORT=8500` serves on another port, with a public URL to match unless
# SPLITLINK_PUBLIC_URL is set.
PORT ?= 8000

run: $(STAMP)
	$(BIN)/splitlink migrate
	SPLITLINK_PUBLIC_URL="$${SPLITLINK_PUBLIC_URL:-http://127.0.0.1:$(PORT)}" \
		$(BIN)/splitlink serve --host 127.0.0.1 --port $(PORT)

# Test processes (pytest-xdist): each has its own PostgreSQL template and databases.
TEST_WORKERS ?= 2

test: $(STAMP) $(JS_STAMP) browser
	$(BIN)/pytest -q -n $(TEST_WORKERS)
	npm test --prefix $(JS)

test-fast: $(STAMP)   # the pure core, the vectors, the client, the documents, the layering: seconds
	$(BIN)/pytest -q tests/protocol tests/client tests/docs tests/server/test_layers.py

fuzz: $(STAMP)   # schemathesis at length against a live server (make test runs it briefly)
	SPLITLINK_FUZZ_EXAMPLES=300 SPLITLINK_FUZZ_PHASES=examples,coverage,fuzzing,stateful \
		SPLITLINK_FUZZ_TIMEOUT=3600 $(BIN)/pytest -q tests/integration/test_openapi_fuzz.py

lint: $(STAMP)
	$(BIN)/ruff check protocol server clients tests bench
	$(BIN)/ruff format --check protocol server clients tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache $(JS)/node_modules $(JS)/dist

# Benchmarks (README.md, Performance). wrk comes from the system's packages.
.PHONY: bench bench-full soak bench-wrk bench-compare
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ./clients/python -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench-wrk:
	@command -v wrk >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk; }

bench: $(BENCH_STAMP) bench-wrk   # 4 to 5 minutes: bench/RESULTS.md, with its JSON and chart
	$(BIN)/python -m bench --out bench/results/latest-run.json --summary bench/RESULTS.md

bench-full: $(BENCH_STAMP) bench-wrk   # about 10 minutes: also 100,000 users, PostgreSQL
	$(BIN)/python -m bench --full --out bench/results/full.json

soak: $(BENCH_STAMP)   # 10 minutes: worker RSS under steady load
	$(BIN)/python -m bench --soak --out bench/results/soak.json

# Two refs' figures measured in one run, each served from a temporary worktree of its own
# (removed at the end): bench/COMPARE.md and bench/results/compare.json. NEW=HEAD is the last
# commit: changes not committed are not measured.
OLD ?= main
NEW ?= HEAD

bench-compare: $(BENCH_STAMP) bench-wrk   # about 4 minutes
	@set -e; work=$$(mktemp -d); \
	trap 'set +e; git worktree remove --force "$$work/old" 2>/dev/null; \
		git worktree remove --force "$$work/new" 2>/dev/null; rm -rf "$$work"' EXIT; \
	trap 'exit 130' INT TERM; \
	git worktree add --quiet --detach "$$work/old" "$(OLD)"; \
	git worktree add --quiet --detach "$$work/new" "$(NEW)"; \
	$(BIN)/python -m bench.compare --old "$$work/old" --new "$$work/new" \
		--old-name "$(OLD)" --new-name "$(NEW)" \
		--out bench/results/compare.json --summary bench/COMPARE.md
