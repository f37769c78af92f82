# metaunlab: common tasks. `make install` once, then `make demo` / `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/omniglot
PYTEST_WORKERS ?= 2

.PHONY: install demo test test-slow lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

install: $(PY)
	$(PY) -m pip install -e ".[test]"

# The offline default: pretrain Conv-4 on Omniglot, meta-train SIB, meta-test four settings.
demo: install
	$(PY) -m experiments.omniglot --workdir=$(WORKDIR)

test: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS)

# Long end-to-end runs, excluded from the default suite.
test-slow: install
	$(PY) -m pytest -q -m slow

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
