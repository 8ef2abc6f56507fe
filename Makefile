# The two entry points a newcomer needs: `make run` and `make test` (see README).
# Everything they need is installed by the targets themselves: a virtual environment with the
# locked dependencies, redis-server from apt when none is on PATH, and for the tests Debian's
# chromium and chromedriver (the live page is tested in a real browser) and promtool (the metrics
# and deploy/prometheus/ are checked with it).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint fuzz bench soak redis-server browser promtool clean

run: $(VENV)/.run-installed redis-server
	scripts/run

test: $(VENV)/.test-installed redis-server browser promtool
	scripts/test

lint: $(VENV)/.test-installed
	scripts/lint

fuzz: $(VENV)/.test-installed redis-server
	scripts/fuzz

bench: $(VENV)/.test-installed redis-server
	scripts/bench

# Ten minutes of traffic through worker, web and Redis faults (SOAK_SECONDS to change it).
soak: $(VENV)/.test-installed redis-server
	scripts/soak

redis-server:
	@scripts/ensure-redis

browser:
	@scripts/ensure-browser

# The tests check /metrics and deploy/prometheus/ with promtool (Debian's prometheus package).
promtool:
	@scripts/ensure-promtool

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"

# The lock files pin every package with its hashes (pip-compile --generate-hashes, see README).
$(VENV)/.run-installed: requirements/main.txt pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet --require-hashes -r requirements/main.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.test-installed: requirements/test.txt pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet --require-hashes -r requirements/test.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@ $(VENV)/.run-installed

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
