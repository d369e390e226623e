# One command to set up and run the pipeline, one to set up and run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?= -p negatives=semi-hard

.PHONY: setup run test lint bench bench-gpu server deploy worker

setup: $(VENV)/.installed

# torch first and pinned: on CPU-only machines it takes the local CPU wheel instead of a CUDA build
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

run: setup
	HF_HUB_DISABLE_TELEMETRY=1 $(VENV)/bin/train-embeddings run $(ARGS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest

# Operations: a local Prefect server, the gpu work pool, the deployments, a worker.
server: setup
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(VENV)/bin/prefect server start --host 127.0.0.1

deploy: setup
	$(VENV)/bin/prefect work-pool create gpu --type process --overwrite
	TRAIN_EMBEDDINGS_HOME=$(CURDIR) $(VENV)/bin/prefect --no-prompt deploy --all

worker: setup
	TRAIN_EMBEDDINGS_HOME=$(CURDIR) $(VENV)/bin/prefect worker start --pool gpu --type process

bench: setup
	$(PY) bench/mining.py
	$(PY) bench/training_overhead.py
	$(PY) bench/training_throughput.py --cpu

# On a GPU worker: raw PyTorch floor, bare sentence-transformers trainer and the pipeline, side by
# side (bert-base architecture and MiniLM), with MFU against a matrix-product peak measured there
bench-gpu: setup
	$(PY) bench/training_throughput.py
