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

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $(BENCH_STAMP)

install-bench: $(BENCH_STAMP) ## Add the bench extra (scikit-learn, for the quality benchmarks' forest) to .venv

# The demo trains 3 short epochs: batches of 16 give it four times the updates of model.train's default
# 64, which is tuned for the 80 epochs of a full run (docs/training.md).
demo: $(STAMP) ## Extract, train, predict and assess on the generated demo scene (out/demo/predictions: classes.tif, .png; accuracy off the training patches: assessment/); the change between its two dates (out/demo/change)
	$(PY) -m pipelines.extract --output out/demo/data --overwrite --points-per-class 50
	$(PY) -m model.train --epochs 3 --max-minutes 6 --batch-size 16 --learning-rate 0.001
	$(PY) -m pipelines.predict --mosaic --overwrite
	$(PY) -m pipelines.assess design out/demo/predictions --exclude-training out/demo/data --overwrite
	$(PY) -m pipelines.assess estimate out/demo/predictions/assessment --reference-raster demo
	$(PY) -m pipelines.change --overwrite
	$(PY) -m pipelines.assess design out/demo/change --exclude-training out/demo/data --overwrite
	$(PY) -m pipelines.assess estimate out/demo/change/assessment --reference-raster demo

# One pytest worker per CPU plus one: many tests wait on subprocesses and TensorFlow start-ups, and the
# extra worker fills those waits (2 CPUs: 3 workers 380 s, 2 workers 410 s, 1 worker 670 s).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
test: $(STAMP) ## Run the test suite
	$(PY) -m pytest -q -ra -n $(TEST_WORKERS) --dist worksteal

bench: $(BENCH_STAMP) ## Run the benchmarks (figures in benchmarks/results/)
	$(PY) -m benchmarks.scene_layout
	$(PY) -m benchmarks.extract_throughput
	$(PY) -m benchmarks.predict_throughput
	$(PY) -m benchmarks.cog_size
	$(PY) -m benchmarks.serve_latency
	$(PY) -m benchmarks.local_cores

# NO_MKDOCS_2_WARNING: the Material theme's notice about its successor, printed on every build.
docs: $(STAMP) ## Build the documentation site into site/ (strict: a broken link or a page left out fails)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

LEAFLET_VERSION := 1.9.4
VENDOR := pipelines/view/static/vendor
vendor: ## Refresh the map viewer's vendored Leaflet from the npm registry (needs npm)
	rm -rf .cache/vendor && mkdir -p .cache/vendor
	cd .cache/vendor && npm pack --silent leaflet@$(LEAFLET_VERSION) && tar xzf leaflet-$(LEAFLET_VERSION).tgz
	rm -rf $(VENDOR)/leaflet && mkdir -p $(VENDOR)/leaflet/images
	cp .cache/vendor/package/dist/leaflet.js .cache/vendor/package/dist/leaflet.css .cache/vendor/package/LICENSE $(VENDOR)/leaflet/
	cp .cache/vendor/package/dist/images/*.png $(VENDOR)/leaflet/images/

lint: $(STAMP) ## Check style with ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Google Cloud: one image for every job, one Flex Template spec per templates/<job>/metadata.json.
PROJECT ?=
REGION ?= us-central1
BUCKET ?= $(PROJECT)-terrabeam
REPOSITORY ?= terrabeam
ifeq ($(origin TAG),undefined)
TAG := $(shell date -u +%Y%m%d-%H%M%S)
endif
IMAGE ?= $(REGION)-docker.pkg.dev/$(PROJECT)/$(REPOSITORY)/terrabeam:$(TAG)
GPU ?= false
TEMPLATE_JOBS := $(patsubst templates/%/metadata.json,%,$(wildcard templates/*/metadata.json))

template: ## Build the image and stage the Flex Templates: PROJECT=p [REGION= BUCKET= IMAGE= GPU=true]
	@test -n "$(PROJECT)" || { echo "error: set PROJECT=<project id> (REGION, BUCKET, IMAGE have defaults)" >&2; exit 2; }
	gcloud builds submit --project $(PROJECT) --config templates/cloudbuild.yaml \
	  --substitutions _IMAGE=$(IMAGE),_GPU=$(GPU) .
	for job in $(TEMPLATE_JOBS); do \
	  gcloud dataflow flex-template build gs://$(BUCKET)/templates/$$job.json --project $(PROJECT) \
	    --image $(IMAGE) --sdk-language PYTHON --metadata-file templates/$$job/metadata.json \
	    --temp-location gs://$(BUCKET)/tmp --staging-location gs://$(BUCKET)/staging || exit 1; \
	done
	@echo "Image $(IMAGE); templates in gs://$(BUCKET)/templates/. Launch one with:"
	@echo "  $(PY) -m pipelines.launch train --project $(PROJECT) --region $(REGION) \\"
	@echo "    --template-path gs://$(BUCKET)/templates/train.json --param data=gs://$(BUCKET)/data \\"
	@echo "    --param model_dir=gs://$(BUCKET)/models/run1 --wait"

clean: ## Remove outputs and caches (keeps .venv)
	rm -rf out .cache .pytest_cache

.PHONY: help install install-bench demo test bench docs lint template clean vendor
