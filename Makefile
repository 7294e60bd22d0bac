# Two entry points: `make rehearse` and `make test`. Both bootstrap .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
LAB_PORT ?= 8888

.PHONY: venv test test-unit test-integration nbval rehearse lab benchmark

venv: $(STAMP)

# Re-install only when the dependency list changes; the package itself is editable.
# JupyterLab (the [lab] extra) is installed too: `make lab` needs it and the test suite
# checks the lab (tests/integration/lab).
$(STAMP): pyproject.toml
	@echo "==> [1/3] creating the virtual environment $(VENV) ($(PYTHON))"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> [2/3] upgrading pip"
	@$(BIN)/python -m pip install -q --upgrade pip
	@echo "==> [3/3] installing the runbook with its dependencies, test tools and JupyterLab (a few minutes; pip names each package)"
	@$(BIN)/python -m pip install --progress-bar off -e '.[test,lab]'
	@touch $(STAMP)
	@echo "==> $(VENV) is ready"

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

test-integration: venv
	$(BIN)/python -m pytest -m "integration or notebooks" $(PYTEST_ARGS)

# the five notebooks, dry-run by nbval against one migrated twin (notebooks/conftest.py)
nbval: venv
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env notebooks/

rehearse: venv
	$(BIN)/runbook rehearse --with-rollback

lab: venv
	$(BIN)/runbook lab --port $(LAB_PORT)

benchmark: venv
	$(BIN)/python benchmarks/api_paging.py
