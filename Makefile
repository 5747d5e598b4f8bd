# Two commands do everything: `make demo` and `make test`. Each creates .venv
# when it is missing and installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: demo test bench notebooks clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.core: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.bench: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

demo: $(VENV)/.core
	$(PY) -m rnnjax demo $(ARGS)

test: $(VENV)/.test
	$(PY) -m pytest -q -n 2 --durations=15 $(ARGS)

bench: $(VENV)/.bench
	$(PY) benchmarks/bench_kernels.py $(ARGS)

notebooks: $(VENV)/.test
	$(PY) notebooks/build.py

clean:
	rm -rf $(VENV) runs .pytest_cache
