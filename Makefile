.DEFAULT_GOAL := help
VENV ?= .venv
BIN := $(VENV)/bin

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: ## create the venv with test, typing and dev extras
	python3 -m venv $(VENV) && $(BIN)/pip install -q -e '.[test,typing,dev]'

test: ## run the test suite (in parallel: pytest-xdist, one worker per core)
	$(BIN)/pytest

test-fast: ## the fast subset: SQLite only, no test that starts a process
	$(BIN)/pytest -m "not slow and not postgres"

lint: ## ruff check and format check
	$(BIN)/ruff check authserver tests migrations examples verifiers
	$(BIN)/ruff format --check authserver tests migrations examples verifiers

fmt: ## format the code
	$(BIN)/ruff check --fix authserver tests migrations examples verifiers
	$(BIN)/ruff format authserver tests migrations examples verifiers

typecheck: ## mypy --strict on the package
	$(BIN)/mypy

db: ## apply migrations to AUTHSERVER_DATABASE_URL
	$(BIN)/authserver db upgrade

serve: ## run the server
	$(BIN)/authserver serve


.PHONY: help install test test-fast lint fmt typecheck db serve
