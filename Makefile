# The README's commands. `make run` starts everything; `make test` runs every check CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CMD ?= help

.PHONY: run test manage lint format audit deps deps-test chromium pgbouncer anvil bench-help clean

# Runtime dependencies, reinstalled only when requirements.txt changes.
$(VENV)/.runtime-installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

$(VENV)/.dev-installed: $(VENV)/.runtime-installed requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

deps: $(VENV)/.runtime-installed
deps-test: $(VENV)/.dev-installed chromium anvil pgbouncer

# Browser tests drive Debian's Chromium; never a browser downloaded by a test tool.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "Installing Debian's chromium package ..."; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# PgBouncer (transaction pooling) for the test and benchmark that run several web and worker processes through it;
# Debian's package. They start their own instance; the package's own service is not used.
pgbouncer:
	@[ -x /usr/sbin/pgbouncer ] || { \
		echo "Installing Debian's pgbouncer package ..."; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq pgbouncer >/dev/null; }

# Anvil, Foundry's local Ethereum node (the reference relay's upstream in `make run` and the tests), from the npm registry at a pinned
# version into .tools/ (git-ignored); the package ships the native binary. Without npm it says so, the relay's
# end-to-end tests skip and `make run`'s live traffic stays synthetic.
ANVIL_VERSION := 1.7.1
anvil: .tools/.anvil-$(ANVIL_VERSION)
.tools/.anvil-$(ANVIL_VERSION):
	@command -v npm >/dev/null 2>&1 || { echo "npm not found: Anvil not installed (the relay's end-to-end tests skip)"; exit 0; }; \
	npm install --prefix .tools --no-save --no-audit --no-fund --loglevel=error @foundry-rs/anvil@$(ANVIL_VERSION) && \
	touch $@

## make run: embedded PostgreSQL + Redis (unless DATABASE_URL / REDIS_URL are set), migrate, seed, web + worker + beat,
## and the reference relay in front of Anvil and the demo LLM upstream, which the simulator's live traffic goes through.
run: deps anvil
	$(PY) -m project.devstack run

## make test: the lint checks (make lint), then pytest (which also checks for missing migrations) with line and branch
## coverage, printed per app (under 90 % of lines in any app fails).
test: deps-test lint
	rm -f .coverage .coverage.*
	$(PY) -m pytest --cov --cov-report=
	$(PY) scripts/coverage_report.py

## make manage CMD="createsuperuser": manage.py against the same database and broker as `make run`.
manage: deps
	$(PY) -m project.devstack exec -- $(PY) manage.py $(CMD)

## make audit: pip-audit on every pinned requirement, strictly (fails when PyPI's or OSV's vulnerability data is
## out of reach; `make test` runs the same audit and skips, saying so, when it is).
audit: $(VENV)/.dev-installed
	$(PY) -m pip_audit --requirement requirements.txt --requirement requirements-dev.txt --no-deps --disable-pip \
		--strict $$(sed -n 's/^\([A-Za-z0-9][A-Za-z0-9-]*\) *#.*/--ignore-vuln \1/p' .ci/pip-audit-ignore.txt)

## make lint: ruff (lint and format), the import layers (import-linter: no upward import, no cycle) and the types
## (mypy with the Django, DRF and Celery stubs, on every app).
lint: $(VENV)/.dev-installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	PYTHONPATH=. $(VENV)/bin/lint-imports --no-cache
	$(PY) -m mypy

format: $(VENV)/.dev-installed
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) .data artifacts .pytest_cache .mypy_cache .coverage .coverage.*
