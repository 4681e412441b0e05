# The environment lives in .venv and is rebuilt only when pyproject.toml changes.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: env demo test bench bench-drift train dashboards clean

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mlstream demo

test: $(STAMP)
	bash scripts/install-system-deps.sh
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/mlstream bench

bench-drift: $(STAMP)
	$(BIN)/mlstream bench-drift

train: $(STAMP)
	$(BIN)/mlstream train

dashboards: $(STAMP)
	$(BIN)/python -m dashboards.build

clean:
	rm -rf $(VENV)
