# Two entry points, both self-contained on a fresh machine:
#   make run   - set up .venv and build the embedded default (Fashion-MNIST) with Snakemake
#   make test  - set up .venv and run the test suite (skip reasons listed; with CI=true a skip fails)
#   make lint  - ruff check + ruff format --check (Python), snakefmt --check (rules), snakemake --lint (pyproject.toml)
#   make test-kernels - the parity tests again under torch's other CPU kernels than this machine's own
PYTHON ?= python3
VENV ?= .venv
# torch/torchvision pair known to install and import together on CPU-only machines (see docs);
# on a GPU cluster install your CUDA pair first and set TORCH_PINS= to keep it.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
CORES ?= all
# The default's networks are small (0.9 M parameters): two training jobs side by side on 1 thread each finish in
# 0.81x the time of the two one after the other on 2 threads, and ema_select on 1 thread runs beside the few-step
# tuning (benchmarks/README.md, "Training jobs side by side"). Not in profiles/default: Snakemake applies that
# workflow profile on top of any --profile (profiles/slurm's set-threads too). On more cores: RUN_THREADS=
RUN_THREADS ?= --set-threads train=1 tune=1 ema_select=1
# Config files merged over config/config.yaml, e.g. OVERLAY=config/fewstep_long.yaml (only what they change reruns)
OVERLAY ?=

.PHONY: setup run test test-kernels lint bench
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $(TORCH_PINS) -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

run: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/snakemake --profile profiles/default --cores $(CORES) $(RUN_THREADS) \
	  $(if $(strip $(OVERLAY)),--configfile config/config.yaml $(OVERLAY))

test: setup
	$(VENV)/bin/python -m pytest -q -rs tests

lint: setup
	$(VENV)/bin/ruff check ucgm_core workflow tests benchmarks
	$(VENV)/bin/ruff format --check ucgm_core workflow tests benchmarks
	$(VENV)/bin/snakefmt --check Snakefile workflow
	@# snakemake --lint: clean except "Specify a conda environment or container" (one pinned environment, README)
	@# and the shells' use of PY and SCRIPTS (the tool's path stays out of params, which are provenance: a moved
	@# checkout would rerun every job; workflow/rules/common.smk)
	@out=$$(PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/snakemake --lint text 2>&1 | grep -E '^    \* ' \
	  | grep -v 'Specify a conda environment or container' \
	  | grep -vE 'Shell command directly uses variable (PY|SCRIPTS) from outside of the rule' || true); \
	if [ -n "$$out" ]; then echo "snakemake --lint:"; echo "$$out"; exit 1; \
	else echo "snakemake --lint: clean (the conda/container and PY/SCRIPTS items excepted)"; fi

# float32 kernels (pow, exp, matmul, reductions) differ in the last bits between AVX-512, AVX2 and the
# scalar "default" kernels: rerun the tests that compare with tests/fixtures under each kernel below
# this machine's own, so a kernel-dependent comparison fails here rather than on someone else's machine.
test-kernels: setup
	@native=$$($(VENV)/bin/python -c "import torch; print(torch.backends.cpu.get_cpu_capability().lower())"); \
	caps=default; [ "$$native" = avx512 ] && caps="avx2 default"; \
	for cap in $$caps; do \
	  echo "parity tests with ATEN_CPU_CAPABILITY=$$cap (this machine: $$native)"; \
	  ATEN_CPU_CAPABILITY=$$cap $(VENV)/bin/python -m pytest -q -rs -m parity -p no:cacheprovider tests || exit 1; \
	done

bench: setup
	$(VENV)/bin/python benchmarks/train_step.py
	$(VENV)/bin/python benchmarks/sampler_overhead.py
