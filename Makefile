# Weft: `make run` serves a demo on http://127.0.0.1:$(PORT)/, `make test` runs the whole suite.
# Everything is installed into $(VENV) from requirements/*.txt; nothing else is assumed but Python 3.11.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Debian's /usr/bin/python3.11 first: an interpreter under /root (pyenv) cannot be started by the
# unprivileged user that Weft's processes and the code sandbox run as.
PYTHON ?= $(shell for p in /usr/bin/python3.11 /usr/local/bin/python3.11; do [ -x $$p ] && echo $$p && exit; done; \
	command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# The settings read .env from the project root; ENV_FILE only moves where `make run` writes one.
ENV_FILE ?= .env
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
NPROC := $(shell nproc 2>/dev/null || echo 1)
# One worker more than cores: the suite waits on child processes (servers, workers, a browser) as
# much as it computes (3 workers on 2 cores kept them 95% busy, 2 workers left time idle). Tests are
# handed out two at a time, the slow ones first (tests/conftest.py): in bigger chunks they queued
# behind each other on one worker. Each worker runs its database tests in pytest-django's order
# (transactional ones after the others), which --dist worksteal breaks.
XDIST := $(shell [ $(NPROC) -ge 2 ] && echo "-n $$(( $(NPROC) + 1 )) --maxschedchunk 2")

.PHONY: loadgen help run serve demo migrate collectstatic test test-journal-sqlite test-embedded test-fuzz lint lint-js bench clean venv install install-dev lock sandbox browser

help:
	@echo "make run      create the venv, install, migrate SQLite, load the demo, serve on \$$PORT (default 8000)"
	@echo "make test     install the dev tools and run the whole test suite (PYTEST_ARGS=... to pass options)"
	@echo "make test-journal-sqlite  the database journal's tests (marker journal) on SQLite, whatever DATABASE_URL says"
	@echo "make test-embedded  triggers, failure policies, retries, export, plugins, cache, large outputs on SQLite without Redis"
	@echo "make test-fuzz  schemathesis with its coverage phase (every documented boundary) against live servers"
	@echo "make lint     ruff check, ruff format --check and the import contracts (lint-imports)"
	@echo "make lint-js  eslint over the console's JavaScript (npm ci from package-lock.json)"
	@echo "make migrate  apply migrations to DATABASE_URL (default: var/weft.sqlite3)"
	@echo "make bench    engine and HTTP benchmarks (BENCH_ONLY=http,engine runs only those parts)"
	@echo "make lock     compile requirements/*.in into the hashed lock files requirements/*.txt"
	@echo "make clean    remove the venv, the SQLite database, collected static files and caches"

# --- The virtualenv: created once, re-installed only when a requirements file changed. ---------

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

venv: $(BIN)/python

# A stamp holds the checksum of the requirements it was installed from. The .txt files are lock
# files (`make lock`): every package, transitive ones too, pinned with its hashes, so pip installs
# exactly those files or nothing (a package missing from the lock fails the install too).
define install_from
	@sum=$$(cat $(2) | sha256sum | cut -d' ' -f1); \
	if [ "$$(cat $(VENV)/.$(1).sha256 2>/dev/null)" != "$$sum" ]; then \
		echo "Installing requirements/$(1).txt into $(VENV)"; \
		$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/$(1).txt; \
		echo "$$sum" > $(VENV)/.$(1).sha256; \
	fi
endef

install: venv
	$(call install_from,base,requirements/base.txt)

# The example node plugin (docs/plugins.md), which the tests enable: installed from the repository's own
# files, offline, with the setuptools of requirements/dev.txt; again only when its pyproject.toml changed.
PLUGIN_EXAMPLE := examples/weft-plugin-example

install-dev: install
	$(call install_from,dev,requirements/base.txt requirements/dev.txt)
	@sum=$$(sha256sum $(PLUGIN_EXAMPLE)/pyproject.toml | cut -d' ' -f1); \
	if [ "$$(cat $(VENV)/.plugin-example.sha256 2>/dev/null)" != "$$sum" ]; then \
		echo "Installing $(PLUGIN_EXAMPLE) into $(VENV)"; \
		$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --no-index \
			-e $(PLUGIN_EXAMPLE); \
		echo "$$sum" > $(VENV)/.plugin-example.sha256; \
	fi

# Compiles requirements/*.in (the direct dependencies, pinned by hand) into the lock files. It
# resolves against the public index alone, whatever this machine's pip configuration adds (local
# indexes, wheel folders), so that the hashes are those of the files every machine downloads.
# Existing pins are kept; to upgrade one, change its .in pin, or add PIP_COMPILE_ARGS=--upgrade-package=NAME.
PIP_COMPILE_ARGS ?=
PIP_COMPILE = env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
	$(abspath $(BIN))/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras $(PIP_COMPILE_ARGS)

lock: install-dev
	cd requirements && $(PIP_COMPILE) --output-file=base.txt base.in
	cd requirements && $(PIP_COMPILE) --output-file=dev.txt dev.in

# --- Running it --------------------------------------------------------------------------------

# Written once with fresh random keys; never overwritten.
$(ENV_FILE): | venv
	@umask 077; $(BIN)/python -c 'import secrets; print("DEBUG=1"); \
		print("WEFT_SECRET_KEY=" + secrets.token_urlsafe(50)); \
		print("WEFT_FIELD_ENCRYPTION_KEY=" + secrets.token_urlsafe(50))' > $(ENV_FILE)
	@echo "Wrote $(ENV_FILE) with DEBUG=1 and new random keys."

migrate: install $(ENV_FILE)
	$(BIN)/python manage.py migrate --noinput

collectstatic: install $(ENV_FILE)
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0

demo: migrate
	$(BIN)/python manage.py weft_demo

run: migrate collectstatic demo sandbox serve

# Debian packages some targets need: installed when we may (root with apt-get); otherwise a
# line says how, and what needs them fails until they are there.
define debian_package
	@if command -v $(1) >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing $(2) ($(3))"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	else \
		echo "WARNING: $(3) needs $(2), which is not installed: sudo apt-get install $(2)"; \
	fi
endef

# Code nodes run in bubblewrap (platform/DEPLOY.md, "Isolation").
sandbox:
	$(call debian_package,bwrap,bubblewrap,the code sandbox)

# The console's end-to-end tests drive Debian's chromium (nothing is downloaded).
browser:
	$(call debian_package,chromium,chromium,the console's browser tests)

# The bench's HTTP part and its test load the server with ab (a C client: it eats no server CPU).
loadgen:
	$(call debian_package,ab,apache2-utils,the bench's HTTP load)

serve: install $(ENV_FILE)
	@echo "Serving Weft. Open the console: http://$(HOST):$(PORT)/  (sign in as demo)"
	@echo "  admin: http://$(HOST):$(PORT)/admin/   API: http://$(HOST):$(PORT)/api/v1/   API docs: http://$(HOST):$(PORT)/api/docs/"
	@echo "  a forgotten password: $(BIN)/python manage.py changepassword demo"
	exec $(BIN)/daphne -b $(HOST) -p $(PORT) config.asgi:application

# --- Checking it -------------------------------------------------------------------------------

test: install-dev sandbox browser loadgen
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

# The journal writes a batch in one SQL statement on PostgreSQL and through the ORM elsewhere: its
# tests run on both. Here on SQLite without Redis, as on a laptop (the embedded mode, the one that
# uses SQLite), so no service is required.
test-journal-sqlite: install-dev
	env DATABASE_URL=sqlite:///$(CURDIR)/var/test-journal.sqlite3 REDIS_URL= WEFT_REQUIRE_SERVICES= \
		$(BIN)/python -m pytest -m journal $(PYTEST_ARGS)

# A run's lifecycle from outside (webhook triggers, failure policies, retries, export) and the
# engine's growth (plugins, model kinds, the result cache, large outputs, unpartitioned history) as
# the embedded mode runs them: SQLite, no Redis (the tests that need PostgreSQL or Redis skip here).
EMBEDDED_TESTS := tests/hooks tests/alerts tests/engine/test_retry.py tests/engine/test_export.py tests/plugins \
	tests/engine/test_node_cache.py tests/engine/test_large_outputs.py tests/engine/test_llm_adapters.py \
	tests/agents/test_providers.py tests/history/test_partitions.py tests/history/test_retention.py
test-embedded: install-dev
	env DATABASE_URL=sqlite:///$(CURDIR)/var/test-embedded.sqlite3 REDIS_URL= WEFT_REQUIRE_SERVICES= \
		$(BIN)/python -m pytest $(XDIST) $(EMBEDDED_TESTS) $(PYTEST_ARGS)

# Schemathesis with its coverage phase too: every documented boundary of every parameter of every
# operation (the suite leaves that phase out to stay under 10 minutes; CI runs this step after it).
test-fuzz: install-dev
	env WEFT_SCHEMATHESIS_PHASES=examples,coverage,fuzzing,stateful \
		$(BIN)/python -m pytest $(XDIST) tests/platform/test_schemathesis.py $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

# The console's JavaScript, with eslint's recommended rules (eslint.config.js), installed by npm
# from package-lock.json again only when the lock changed.
node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund

lint-js: node_modules/.package-lock.json
	npx --no-install eslint static/console frontend eslint.config.js

# Meant for PostgreSQL + Redis (DATABASE_URL, REDIS_URL); falls back to SQLite with a warning.
bench: install-dev sandbox loadgen
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) node_modules var/weft.sqlite3* staticfiles .pytest_cache .ruff_cache .hypothesis bench-results.json
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
