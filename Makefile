# Two commands do everything: `make demo` and `make test`. Each creates .venv
# when it is missing and installs what it needs. `make lint`, `make typecheck`
# and `make docs` are the checks CI adds (.ci/run).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: demo test lint typecheck docs check bench notebooks clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# The core alone is `pip install -e .` (jax and numpy); the demo runs the
# applications, which need the `apps` extra.
$(VENV)/.apps: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[apps]'
	touch $@

$(VENV)/.test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test,dev]'
	touch $@

$(VENV)/.bench: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

demo: $(VENV)/.apps
	$(PY) -m rnnjax demo $(ARGS)

# The tests, the docstrings' examples and the README's code blocks (doctests).
test: $(VENV)/.test
	$(PY) -m pytest -q -n 2 --durations=15 $(ARGS)

# ruff's lint rules and formatting, as configured in pyproject.toml.
lint: $(VENV)/.dev
	$(VENV)/bin/ruff check rnnjax tests benchmarks notebooks/build.py
	$(VENV)/bin/ruff format --check rnnjax tests benchmarks notebooks/build.py

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

# The API reference (docs/) built from the docstrings; warnings are errors.
docs: $(VENV)/.dev
	$(VENV)/bin/mkdocs build --strict --site-dir build/site

check: lint typecheck docs test

bench: $(VENV)/.bench
	$(PY) benchmarks/bench_kernels.py $(ARGS)

notebooks: $(VENV)/.test
	$(PY) notebooks/build.py

clean:
	rm -rf $(VENV) runs build .pytest_cache .mypy_cache .ruff_cache
