# One command to set up and run the pipeline, one to set up and run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?= -p negatives=semi-hard

UV_VERSION := 0.13.8

.PHONY: setup lock run test test-gpu lint bench bench-gpu server deploy worker

JS := tests/js

setup: $(VENV)/.installed $(JS)/node_modules/.installed

# torch first and pinned, outside the lock: on CPU-only machines pip takes the local CPU wheel
# (a GPU worker installs the CUDA build of the same version before this); then every other
# package exactly as locked, hashes checked, nothing resolved (uv: seconds, not minutes)
$(VENV)/.installed: pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0 uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install -q --python $(PY) --require-hashes --no-deps -r requirements.lock
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	$(PY) -m pip check
	touch $@

# transformers.js for tests/test_stock_runtimes.py, exactly as locked (from the npm registry alone, about 175 MB
# of tarballs, 475 MB unpacked): --ignore-scripts, as onnxruntime-node's install script only fetches CUDA
# binaries from NuGet, its CPU ones are in the tarball. Without npm, the test skips where node is absent too,
# and fails naming this step where node is there.
$(JS)/node_modules/.installed: $(JS)/package.json $(JS)/package-lock.json
	@if command -v npm >/dev/null; then set -x; cd $(JS) && npm ci --ignore-scripts --no-audit --no-fund && \
		touch node_modules/.installed; else echo "npm not found: transformers.js (tests/js) not installed" >&2; fi

# Re-resolve after changing a pin in pyproject.toml. --find-links: against the CPU torch wheel on
# this disk; without it uv resolves PyPI's CUDA torch and locks its nvidia-* libraries too.
# Needs only uv (not the installed set): a changed pin in pyproject.toml is what makes setup fail until re-locked
$(VENV)/bin/uv:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)

lock: $(VENV)/bin/uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra s3 --extra cluster --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --find-links /opt/wheels --no-emit-package torch \
		--custom-compile-command "make lock" -o requirements.lock

run: setup
	HF_HUB_DISABLE_TELEMETRY=1 $(VENV)/bin/train-embeddings run $(ARGS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest

# On a GPU worker (CUDA build of torch installed first): what only a GPU proves, then the benchmark
test-gpu: setup
	$(PY) -m pytest -m gpu -v -rs

# Operations: a local Prefect server, the gpu work pool, the deployments, a worker.
# The server keeps concurrency leases on disk (under PREFECT_HOME), not in memory: a restart while a
# training holds its GPU slot would otherwise never give the slot back (tasks/training/gpu_slot.py)
server: setup
	PREFECT_SERVER_ANALYTICS_ENABLED=false \
	PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=prefect.server.concurrency.lease_storage.filesystem \
		$(VENV)/bin/prefect server start --host 127.0.0.1

# One training at a time per GPU machine: a global concurrency limit train-embeddings-gpu-<machine>
# (limit 1) for each of GPU_WORKERS (hostnames; default this machine); a worker machine not listed gets
# its own when its worker starts (make worker) or its first training runs. mnr-git needs
# TRAIN_EMBEDDINGS_STORE (prefect.yaml); without it, every other deployment is deployed.
GPU_WORKERS ?=
NOT_MNR_GIT = $(shell $(PY) -c "import yaml; print(' '.join('-n ' + d['name'] for d in \
	yaml.safe_load(open('prefect.yaml'))['deployments'] if d['name'] != 'mnr-git'))")

deploy: setup
	$(VENV)/bin/prefect work-pool create gpu --type process --overwrite
	$(PY) -m tasks.training.gpu_slot $(GPU_WORKERS)
	@if [ -n "$$TRAIN_EMBEDDINGS_STORE" ]; then set -x; $(VENV)/bin/prefect --no-prompt deploy --all; else \
		echo "TRAIN_EMBEDDINGS_STORE is not set: deploying all but mnr-git (README: Several machines, one store)" >&2; \
		set -x; $(VENV)/bin/prefect --no-prompt deploy $(NOT_MNR_GIT); fi

worker: setup
	$(PY) -m tasks.training.gpu_slot --if-missing
	$(VENV)/bin/prefect worker start --pool gpu --type process

bench: setup
	$(PY) bench/mining.py
	$(PY) bench/training_overhead.py
	$(PY) bench/training_throughput.py --cpu
	$(PY) bench/export.py
	$(PY) bench/integrity.py
	$(PY) bench/store.py
	$(PY) bench/holdout.py
	$(PY) bench/scale.py --compare-workers      # 10k, 100k and 1M pairs (about 20 minutes on 2 cores), last

# On a GPU worker: raw PyTorch floor, bare sentence-transformers trainer and the pipeline, side by
# side (bert-base architecture and MiniLM), with MFU against a matrix-product peak measured there
bench-gpu: setup
	$(PY) bench/training_throughput.py
