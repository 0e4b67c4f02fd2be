# terrabeam — run `make help` for the targets.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## Show the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP) ## Create .venv with the pinned dependencies and terrabeam itself

demo: $(STAMP) ## Run the main job on the generated demo scene (output in out/demo)
	$(PY) -m pipelines.extract --output out/demo/data --overwrite

test: $(STAMP) ## Run the test suite
	$(PY) -m pytest -q -ra

bench: $(STAMP) ## Run the benchmarks (figures in benchmarks/results/)
	$(PY) -m benchmarks.extract_throughput

lint: $(STAMP) ## Check style with ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean: ## Remove outputs and caches (keeps .venv)
	rm -rf out .cache .pytest_cache

.PHONY: help install demo test bench lint clean
