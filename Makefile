# The environment lives in .venv and is rebuilt only when pyproject.toml or requirements.lock change.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: env demo test lint bench bench-drift train dashboards clean

lint: $(STAMP)
	$(BIN)/ruff check stream
	$(BIN)/mypy

env: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mlstream demo

test: $(STAMP)
	bash scripts/install-system-deps.sh
	$(BIN)/python -m pytest -q

# make bench ARGS="--json" (or --profile /tmp/batch.prof, --runs 5, ...)
bench: $(STAMP)
	$(BIN)/mlstream bench $(ARGS)

bench-drift: $(STAMP)
	$(BIN)/mlstream bench-drift

train: $(STAMP)
	$(BIN)/mlstream train

dashboards: $(STAMP)
	$(BIN)/python -m dashboards.build

clean:
	rm -rf $(VENV)
