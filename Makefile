# metaunlab: common tasks. `make install` once, then `make demo` / `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/omniglot
PYTEST_WORKERS ?= 2

.PHONY: install install-torch demo test test-slow lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

install: $(PY)
	$(PY) -m pip install -e ".[test]"

# Optional: PyTorch (CPU) for the checkpoint-parity tests and reading .pth files with torch.
# 2.13.0 is pinned because these machines carry its CPU wheel; elsewhere any 2.x CPU build works.
install-torch: install
	$(PY) -m pip install torch==2.13.0

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
