# ML container image cache: Airflow 3 DAGs + a local cloud. See README.md.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help venv checkov system-deps lint test test-fast run up down clean mwaa-bundle

help:
	@echo "make run    - local cloud + Airflow, trigger ml_container_cache_build, print the outcome"
	@echo "make up     - local cloud + Airflow UI on http://localhost:8080, kept running"
	@echo "              (make up AIRFLOW=celery: CeleryExecutor with Postgres and Redis)"
	@echo "make down   - stop everything make up/run started, unmount, detach loop devices"
	@echo "make test   - lint + the whole test suite (root runs the real data-plane tests too)"
	@echo "make lint   - ruff + shellcheck"
	@echo "make mwaa-bundle - dist/mwaa/: plugins.zip, requirements.txt, startup.sh, dags/ for Amazon MWAA"

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found %d.%d)" % sys.version_info[:2])'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt -c constraints.txt
	touch $@

venv: $(VENV)/.installed

# checkov pins its own dependency set (it conflicts with Airflow's): a separate virtualenv.
CHECKOV_VENV := .venv-checkov
$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-checkov.txt
	touch $@

checkov: $(CHECKOV_VENV)/.installed

system-deps:
	@bash tools/system-deps.sh

SHELL_SCRIPTS = $(shell git ls-files '*.sh' 2>/dev/null) .ci/run

lint: venv
	$(VENV)/bin/ruff check .
	@if command -v shellcheck >/dev/null; then shellcheck $(SHELL_SCRIPTS); \
	else echo "shellcheck not installed (apt-get install shellcheck): skipped"; fi

test: venv checkov system-deps lint
	$(VENV)/bin/pytest

test-fast: venv
	$(VENV)/bin/pytest -m "not slow"

run: venv system-deps
	$(PY) -m devstack run

up: venv system-deps
	$(PY) -m devstack up $(if $(AIRFLOW),--airflow $(AIRFLOW))

down: venv
	$(PY) -m devstack down

# Standard library only: no virtualenv needed to package for MWAA.
mwaa-bundle:
	$(PYTHON) -m tools.mwaa_bundle --out dist/mwaa

clean: down
	rm -rf .devstack .airflow dist
