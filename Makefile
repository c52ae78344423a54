# Two commands: `make run` (the whole local stack) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TEST_WORKERS ?= 3

.PHONY: run test test-fast lint bench medusa clean help

help:
	@echo "make run    set up .venv, start Temporal dev server + UI, DummyJSON mirror, worker, schedules"
	@echo "make test   set up .venv and run the test suite (TEST_WORKERS=$(TEST_WORKERS) processes)"
	@echo "make test-fast  only the pure tests: no server, no process, no browser (seconds)"
	@echo "make lint   ruff + mypy"
	@echo "make bench  print sync and schedule figures (bench/)"
	@echo "make medusa install (once) and start a local Medusa 2.21 store; Ctrl-C stops it"

# The venv holds exactly the versions in uv.lock (uv from PyPI, then `uv sync --locked`, which
# also fails if uv.lock no longer matches pyproject.toml: run `.venv/bin/uv lock` after editing it).
$(STAMP): pyproject.toml uv.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: Python 3.11+ is needed (found %s); set PYTHON=python3.11" % sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check 'uv>=0.5'
	UV_PROJECT_ENVIRONMENT=$(VENV) $(VENV)/bin/uv sync --locked --extra dev --inexact --compile-bytecode --quiet
	@touch $(STAMP)

run: $(STAMP)
	@$(PY) -m devtools.devstack

# The suite on TEST_WORKERS processes (pytest-xdist): much of it waits on real time, so more
# workers than cores pays. loadgroup keeps each Medusa test and each module-scoped fixture's
# tests on one worker (tests/tiers.py). One file alone: $(PY) -m pytest tests/test_x.py
test: $(STAMP)
	@sh devtools/prereqs.sh
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

# The pure tier: tests marked with none of the tiers that need a server, a process or a browser.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not (temporal or postgres or medusa or browser or process or prometheus)"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

bench: $(STAMP)
	$(PY) bench/sync.py
	$(PY) bench/fanout.py --sizes 1000 10000

# A local Medusa store for the Medusa sync target (devtools/medusa): installed once per machine
# under ~/.cache/schedjobs (SCHEDJOBS_MEDUSA_CACHE), kept in DATA_DIR/medusa (default data/medusa); prints
# MEDUSA_BACKEND_URL and MEDUSA_API_KEY. Flags: $(PY) -m devtools.medusa --help
medusa: $(STAMP)
	@$(PY) -m devtools.medusa

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache *.egg-info
