# metaunlab: common tasks. `make install` once, then `make demo` / `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/omniglot
PYTEST_WORKERS ?= 2

.PHONY: install install-torch demo folds test test-slow test-e2e bench-quick lint clean \
	tpu-create tpu-setup tpu-train tpu-logs tpu-delete

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

install: $(PY)
	$(PY) -m pip install -e ".[test]"

# Optional: PyTorch (CPU) for the checkpoint-parity tests and reading .pth files with torch.
# 2.13.0 is pinned because these machines carry its CPU wheel; elsewhere any 2.x CPU build works.
install-torch: install
	$(PY) -m pip install torch==2.13.0

# The offline default: pretrain Conv-4 on Omniglot, meta-train SIB, meta-test it under the
# character split and on held-out alphabets (W/character, W/within_alphabet). The archives are
# downloaded where no local copy exists (docs/data.md); ARGS adds flags, e.g. ARGS=--data_dir=D.
demo: install
	$(PY) -m experiments.omniglot --workdir=$(WORKDIR) $(ARGS)

# Held-out alphabets, all four folds, and the mean over folds (W/fold<k>, W/folds.md).
folds: install
	$(PY) -m experiments.omniglot_folds --workdir=$(WORKDIR)_folds

# --dist loadfile: a test file's module-scoped fixtures (the tiny trained runs) are built once,
# by the one worker that runs the whole file, instead of once per worker.
test: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=15

# Long end-to-end runs and the slowest checks, excluded from the default suite.
test-slow: install
	$(PY) -m pytest -q -m slow

# The end-to-end runs of whole commands and processes that CI adds to the default suite: two
# processes meta-training as one, a SIGTERM and the resumed run, the benchmark's command
# line, a published checkpoint imported, evaluated and trained on, the wheel installed.
E2E_TESTS := tests/test_parallel.py::test_two_processes_train_like_one_and_only_process_0_writes \
	tests/test_preemption.py::test_sigterm_saves_the_current_step_and_the_rerun_ends_bitwise_equal \
	tests/experiments/tools/test_benchmark.py::test_cli_smoke_writes_well_formed_json \
	"tests/interop/test_workdir_import.py::test_published_sib_checkpoint_imports_evaluates_and_meta_training_continues[conv4]" \
	tests/test_packaging.py::test_the_wheel_installs_metaunlab_alone_and_its_console_scripts_run
test-e2e: install
	$(PY) -m pytest -q -m slow $(E2E_TESTS)

# The benchmark's quick suite (about 1 min on 2 CPU cores). CI runs it as a smoke test: it must
# finish; no timing is asserted. The full suite: `$(PY) -m experiments.benchmark`.
BENCH_JSON ?= workdirs/bench-quick.json
bench-quick: install
	mkdir -p $(dir $(BENCH_JSON))
	$(PY) -m experiments.benchmark --quick --json=$(BENCH_JSON)

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

# --- Cloud TPU VMs (docs/distributed.md). `DRY_RUN=1` prints the commands instead.
TPU_NAME ?= metaunlab
ZONE ?= us-central2-b
ACCELERATOR_TYPE ?= v4-32
RUNTIME_VERSION ?= tpu-ubuntu2204-base
EXP ?= miniimagenet
CONFIG ?=
# Checkpoints must live where every worker sees them (Filestore NFS, a gcsfuse-mounted bucket).
TPU_WORKDIR ?= /mnt/shared/workdirs/$(EXP)
TPU_DATA_DIR ?= /mnt/shared/data/$(EXP)
TRAIN_ARGS ?=
RUN := $(if $(DRY_RUN),echo,)
TPU_VM := gcloud compute tpus tpu-vm
TPU_AT := $(TPU_NAME) --zone=$(ZONE)

tpu-create:
	$(RUN) $(TPU_VM) create $(TPU_AT) --accelerator-type=$(ACCELERATOR_TYPE) \
	--version=$(RUNTIME_VERSION)

# Ship this commit (git archive: no venv, no workdirs) to every worker and install it there.
tpu-setup:
	$(RUN) git archive --format=tar.gz -o metaunlab-src.tar.gz HEAD
	$(RUN) $(TPU_VM) scp metaunlab-src.tar.gz $(TPU_NAME): --zone=$(ZONE) --worker=all
	$(RUN) $(TPU_VM) ssh $(TPU_AT) --worker=all --command="mkdir -p ~/metaunlab && \
	tar -xzf ~/metaunlab-src.tar.gz -C ~/metaunlab && cd ~/metaunlab && \
	python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'"

# One process per worker; --distributed lets JAX find the pod's other workers by itself.
tpu-train:
	$(RUN) $(TPU_VM) ssh $(TPU_AT) --worker=all --command="cd ~/metaunlab && \
	nohup .venv/bin/python -m experiments.$(EXP) --distributed --workdir=$(TPU_WORKDIR) \
	$(if $(CONFIG),--config=$(CONFIG)) --config.data.root=$(TPU_DATA_DIR) $(TRAIN_ARGS) \
	> train.log 2>&1 &"

# Worker 0 is process 0, the one that prints progress and writes metrics.
tpu-logs:
	$(RUN) $(TPU_VM) ssh $(TPU_AT) --worker=0 --command="tail -n 50 ~/metaunlab/train.log"

tpu-delete:
	$(RUN) $(TPU_VM) delete $(TPU_AT) --quiet
