# fashion-search: the two set-up commands (README) and a few helpers.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
PY := .venv/bin/python
# The dataset: the local copy beside this checkout when there is one, else the hub id.
SHARED_DATASET := $(abspath ../shared/datasets/fashion-product-images-small/fashion-product-images-small.parquet)
ifneq ($(wildcard $(SHARED_DATASET)),)
export FS_DATASET_SOURCE ?= $(SHARED_DATASET)
endif
# Catalog size for `make up`: empty = the whole dataset (44,072 products).
LIMIT ?=

.PHONY: up down status test test-unit lint bootstrap bench

bootstrap:
	@scripts/bootstrap.sh

## Local stack up, catalog loaded and embedded, model server, search API and UI running.
up: bootstrap
	$(PY) -m stack up
	$(PY) -m fashion_search.cli load --skip-existing $(if $(LIMIT),--limit $(LIMIT))
	$(PY) -m stack.apps up

down:
	-$(PY) -m stack.apps down
	$(PY) -m stack down

status:
	$(PY) -m stack status

lint: bootstrap
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

## Lint, types, the tests against the real stack (started if needed, stopped after), then
## docker compose and the functions on the emulators (skipped, saying why, while the native
## stack holds the ports or where no engine can be installed).
test: lint
	$(PY) -m pytest
	$(PY) -m pytest -m compose -s

## The tests that need no server (under a minute).
test-unit: bootstrap
	$(PY) -m pytest -m "not stack and not build and not compose" -q -n 2

## Only docker compose up for real and the functions on the emulators (alone: the native ports).
.PHONY: test-compose
test-compose: bootstrap
	$(PY) -m pytest -m compose -s

bench: bootstrap
	$(PY) -m bench.catalog
	$(PY) -m bench.search
	$(PY) -m bench.ingest

## Lambda artifacts of template.yaml: build/lambda/<role>/ for python3.13 (sizes: build/lambda/sizes.json).
.PHONY: lambda
lambda: bootstrap
	$(PY) scripts/build_lambda.py
