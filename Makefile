# whinmovilla: `make run` runs the gateway, `make test` runs the suite; both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

# The suite's processes (pytest-xdist; each test file stays in one). Most of a test's time is spent
# waiting on the real processes it starts, so 3 keep 2 cores busy; TEST_PROCESSES=0 runs it in one.
TEST_PROCESSES ?= 3

.PHONY: install install-test browser ffmpeg postgresql run test bench lint clean

# `make run` installs only what the gateway needs; the test tools (pytest, selenium, schemathesis,
# ruff) come with `make test`.
$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)
install-test: $(TEST_STAMP)

# Debian's chromium + chromium-driver for the admin page's browser tests (apt-get; root or sudo).
browser:
	./scripts/install-browser

# Debian's ffmpeg: voice notes from mp3/m4a/wav, durations and video thumbnails. Optional for `make run`
# (without it a voice note must be OGG/Opus already); the tests need it.
ffmpeg:
	./scripts/install-ffmpeg

# Debian's PostgreSQL server programs: the tests of sessions shared between hosts start one of their own.
postgresql:
	./scripts/install-postgresql

run: $(STAMP)
	@$(BIN)/python -m controlplane.launch

test: $(TEST_STAMP) browser ffmpeg postgresql
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

bench: $(TEST_STAMP)
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis test-artifacts
