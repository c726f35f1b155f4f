# bhxh-integrity — set-up, run, test, bench. See README.md.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# Debian packages the test-suite drives as independent checkers and renderers, and the
# software PKCS#11 token (SoftHSM2) that stands in for an HSM.
TEST_DEBS := openssl postgresql-client poppler-utils oathtool xmlsec1 fonts-dejavu-core zbar-tools chromium chromium-driver softhsm2 nginx
RUN_DEBS  := fonts-dejavu-core
# The load generator of bench/ (python threads are the fallback, and saturate first) and the
# software PKCS#11 token of bench_token.py.
BENCH_DEBS := wrk softhsm2

.PHONY: run test bench soak install install-test system-deps system-deps-run postgres clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(TEST_STAMP): $(STAMP) requirements-test.lock
	$(BIN)/pip install --quiet --require-hashes -r requirements-test.lock
	touch $@

install: $(STAMP)
install-test: $(TEST_STAMP)

system-deps-run:
	@scripts/apt-ensure $(RUN_DEBS)

system-deps:
	@scripts/apt-ensure $(TEST_DEBS)

postgres:
	@scripts/postgres-ensure

run: install system-deps-run
	$(BIN)/bhxh-integrity init --demo
	$(BIN)/bhxh-integrity serve --demo

test: install-test system-deps postgres
	$(BIN)/python scripts/dep-audit
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

bench: install-test postgres
	@scripts/apt-ensure $(BENCH_DEBS)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

soak: install-test system-deps postgres
	$(BIN)/python -m pytest -m soak -p no:cacheprovider tests

clean:
	rm -rf $(VENV) var .pytest_cache
