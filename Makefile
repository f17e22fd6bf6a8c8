# Every target bootstraps its own environment: a fresh clone needs only python3.11 and network
# access to the package registries.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
GPU ?= 0
PYTEST_ARGS ?= -n 2
DEMO_ARGS ?=

.PHONY: install test demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	RNL_KERAS_GPU=$(GPU) $(PIP) install -c constraints.txt -e ".[dev]"
	# tensorflow-serving-api depends on the full `tensorflow` wheel; --no-deps keeps tensorflow-cpu.
	$(PIP) install -c constraints.txt --no-deps tensorflow-serving-api
	touch $@

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

demo: install
	$(PY) pipelines/demo.py $(DEMO_ARGS)

bench: install
	$(PY) bench/blocks.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
