# Two commands do everything: `make demo` and `make test`. Each creates .venv
# when it is missing and installs what it needs. `make lint`, `make typecheck`
# and `make docs` are the checks CI adds (.ci/run).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: demo test test-slow fuzz lint typecheck docs check bench notebooks clean

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

# The tests, the docstrings' examples and the README's and docs' code blocks
# (doctests), in under 10 minutes on 2 cores; the tests marked slow in
# tests/conftest.py (learning demonstrations, whole notebooks, multi-process runs)
# run with `make test-slow`, and CI runs both.
test: $(VENV)/.test
	$(PY) -m pytest -q -n 2 --durations=15 -m "not slow" $(ARGS)

test-slow: $(VENV)/.test
	$(PY) -m pytest -q -n 2 --durations=15 -m slow tests $(ARGS)

# The property-based bad-input suite with a large hypothesis budget (make test runs
# it with a small one).
# Large budgets: the bad-input properties (300 examples each) and every file of a saved
# step flipped, truncated and deleted (the suite runs a small sample of both).
fuzz: $(VENV)/.test
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q tests/test_bad_inputs.py $(ARGS)
	RNNJAX_FUZZ=1 $(PY) -m pytest -q tests/test_faults.py $(ARGS)

# ruff's lint rules and formatting, as configured in pyproject.toml.
lint: $(VENV)/.dev
	$(VENV)/bin/ruff check rnnjax tests benchmarks notebooks/build.py
	$(VENV)/bin/ruff format --check rnnjax tests benchmarks notebooks/build.py

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

# The manual (docs/: guides, notebooks, the demo report, the API reference); warnings
# are errors. Then a test builds it again and checks every internal link of the site.
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site
	RNNJAX_DOCS_BUILD=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_docs.py -k site

check: lint typecheck docs test

bench: $(VENV)/.bench
	$(PY) benchmarks/bench_kernels.py $(ARGS)

notebooks: $(VENV)/.test
	$(PY) notebooks/build.py

clean:
	rm -rf $(VENV) runs build .pytest_cache .mypy_cache .ruff_cache
