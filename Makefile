# Two entry points, both self-contained on a fresh machine:
#   make run   - set up .venv and build the embedded default (Fashion-MNIST) with Snakemake
#   make test  - set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
# torch/torchvision pair known to install and import together on CPU-only machines (see docs);
# on a GPU cluster install your CUDA pair first and set TORCH_PINS= to keep it.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
CORES ?= all

.PHONY: setup run test bench
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $(TORCH_PINS) -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

run: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/snakemake --profile profiles/default --cores $(CORES)

test: setup
	$(VENV)/bin/python -m pytest -q tests

bench: setup
	$(VENV)/bin/python benchmarks/train_step.py
	$(VENV)/bin/python benchmarks/sampler_overhead.py
