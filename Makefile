# Two user-facing targets: `make run` and `make test`. Both create .venv with the pinned
# stack (and build Horovod with Gloo) when it is missing, and skip that when it is there.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
DEPS_STAMP := $(VENV)/.deps-installed
HVD_STAMP := $(VENV)/.horovod-installed
# Tests and benchmarks on this 2-core machine: fix the thread pools explicitly.
export TF_NUM_INTRAOP_THREADS ?= 2
export TF_NUM_INTEROP_THREADS ?= 1
export OMP_NUM_THREADS ?= 2
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0
RUN_DIR ?= runs/make_run

.PHONY: run test test-unit test-parallel test-slow lint venv clean-venv bench

venv: $(HVD_STAMP)

$(DEPS_STAMP): constraints.txt setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt setuptools wheel
	$(PIP) install -q -c constraints.txt -e '.[test]'
	@touch $@

# Horovod 0.28.1 must be compiled against the TensorFlow already in the venv
# (--no-build-isolation); the horovod[tensorflow] extra would pull a second TensorFlow.
$(HVD_STAMP): $(DEPS_STAMP)
	@if $(PY) -c "import horovod.tensorflow" 2>/dev/null; then \
	  echo "horovod already installed"; \
	else \
	  command -v cmake >/dev/null || $(PIP) install -q cmake; \
	  echo "building horovod 0.28.1 with TensorFlow + Gloo (a few minutes)"; \
	  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
	  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
	  $(PIP) install -q --no-build-isolation -c constraints.txt horovod==0.28.1; \
	fi
	$(VENV)/bin/horovodrun --check-build
	@touch $@

lint: $(DEPS_STAMP)
	$(VENV)/bin/ruff check mlpf_tf tuners benchmark reports tests

test-unit: $(HVD_STAMP)
	$(PY) -m pytest -q

# tests/parallel runs under two Gloo ranks on localhost, as Horovod's own CI does.
test-parallel: $(HVD_STAMP)
	@if ls tests/parallel/test_*.py >/dev/null 2>&1; then \
	  $(VENV)/bin/horovodrun -np 2 -H localhost:2 --gloo \
	    $(PY) -m pytest -q -p no:cacheprovider tests/parallel; \
	else echo "no parallel tests"; fi

test: lint test-unit test-parallel

test-slow: $(HVD_STAMP)
	$(PY) -m pytest -q -m slow

run: $(HVD_STAMP)
	$(PY) -m benchmark.compare --output_dir $(RUN_DIR)

clean-venv:
	rm -rf $(VENV)
