# Two entry points a fresh machine needs: `make demo` and `make test`.
# Both build .venv idempotently from the project's own files.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv demo test test-fast lint bench bench-full clean bqemu chromium soak

$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(VENV)/bin/truth-forge demo

# The BigQuery emulator's own venv (pins that clash with the project venv), used by the tests.
BQEMU_STAMP := .venv-bqemu/.installed-stamp

$(BQEMU_STAMP): scripts/install-bqemulator.sh requirements/bqemulator.txt requirements/bqemulator-constraints.txt
	PYTHON=$(PYTHON) bash scripts/install-bqemulator.sh
	@touch $(BQEMU_STAMP)

bqemu: $(BQEMU_STAMP)

# Headless Chromium from Debian's packages (apt: root or sudo), for the console's browser tests;
# nothing happens when it is installed. A failed install does not stop the tests: those tests
# then skip and say why.
chromium:
	-bash scripts/install-chromium.sh

# Unused or undefined names, syntax errors and type errors (the sync is held to its SyncStore
# protocol) fail the build before the tests run.
lint: venv
	$(VENV)/bin/ruff check truth_forge tests benchmarks scripts
	$(VENV)/bin/mypy truth_forge

# The full suite, each test file whole in one of TEST_WORKERS processes (pytest-xdist): most of the
# time is spent waiting on subprocesses, servers and the emulator, so more workers than cores pay.
# Each worker starts its own sandbox and bqemulator on ports the OS gives. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 4

test: venv bqemu chromium lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# Everything except the BigQuery-emulator contract tests.
test-fast: venv chromium lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not bigquery"

# Seeded recovery trials (kills, fault storms, hostile data), minutes not hours; see docs/soak.md.
# Never part of `make test`: tests/soak/conftest.py deselects them unless TRUTH_FORGE_SOAK=1.
soak: venv
	TRUTH_FORGE_SOAK=1 $(PY) -m pytest tests/soak -q

# By hand, never in the test suite: issue 11's scoreboard (truth-forge, the seed's naive loop and dlt,
# side by side against the sandbox), written into its section of BENCHMARKS.md with the machine it
# ran on. Quick: about 7 minutes on 2 cores. Full: the issue's sizes (100k reruns, 1M memory, 20k pull).
# The other benchmarks/*.py scripts are run by hand (their commands are in BENCHMARKS.md).
bench: venv
	$(PY) benchmarks/scoreboard.py --quick --write BENCHMARKS.md

bench-full: venv
	$(PY) benchmarks/scoreboard.py --full --write BENCHMARKS.md

clean:
	rm -rf $(VENV) .venv-bqemu .pytest_cache build *.egg-info
