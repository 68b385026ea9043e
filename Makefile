# Two commands do all the set-up: `make demo` and `make test`.
VENV ?= .venv
TORCH_INDEX ?=   # e.g. https://download.pytorch.org/whl/cpu for PyTorch's CPU-only build
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip --progress-bar on
	$(PY) -m pip install --progress-bar on torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --progress-bar on -e ".[dev]"
	touch $(STAMP)

.PHONY: install demo test dev benchmark serve
install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cliplabel demo --results-root demo/results   # and demo/cliplabel.duckdb

test: $(STAMP)
	$(PY) -m pytest

# `dg dev` (the webserver and the daemon) in the project's own virtual environment, as if activated: `dg` runs
# the code location with the Python it finds active.
dev: $(STAMP)
	mkdir -p .dagster_home && ln -sfn ../deploy/local/dagster.yaml .dagster_home/dagster.yaml
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dagster_home} \
	CLIPLABEL_RESULTS_ROOT=$${CLIPLABEL_RESULTS_ROOT:-$(CURDIR)/demo/results} \
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
		$(VENV)/bin/dg dev

benchmark: $(STAMP)
	$(PY) benchmarks/benchmark.py

# The HTTP service on 127.0.0.1:8000: the demo's jobs with the toy model, unless CLIPLABEL_RESULTS_ROOT and
# CLIPLABEL_MODEL say otherwise.
serve: $(STAMP)
	$(VENV)/bin/cliplabel serve --results-root $${CLIPLABEL_RESULTS_ROOT:-demo/results} \
		--model $${CLIPLABEL_MODEL:-cliplabel_pipeline/toyworld/model}

# Beyond one machine: Redis, PostgreSQL, the Dagster daemon and webserver, the lineage worker and two Celery
# worker hosts on this machine (apt-get install -y redis-server postgresql first); Ctrl-C stops them all.
.PHONY: cluster benchmark-cluster
cluster: $(STAMP)
	$(PY) deploy/local/cluster.py

benchmark-cluster: $(STAMP)
	$(PY) benchmarks/cluster.py

# The CUDA path checked and measured on a GPU machine in one run (needs no install: torch, transformers, Pillow,
# pytest and psutil; what is missing comes from .whl/); `make gpu-check-dry` runs all but the CUDA parts here.
.PHONY: gpu-check gpu-check-dry
gpu-check:
	bash benchmarks/gpu_check.sh

gpu-check-dry: $(STAMP)
	PYTHON=$(PY) bash benchmarks/gpu_check.sh --dry
