# The environment lives in .venv and is rebuilt only when pyproject.toml or requirements.lock change.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The second supported Python the tests run on (broker-free tests and every doctest).
PYTHON_ALT ?= python3.13
VENV_ALT := .venv-alt
STAMP_ALT := $(VENV_ALT)/.installed
QUICK_TESTS := stream tests/test_features.py tests/test_schema.py tests/test_drift.py tests/test_labels.py \
	tests/test_profile.py tests/test_drift_stats.py tests/test_replay.py tests/test_metrics_doc.py

.PHONY: env demo test test-alt-python lint bench bench-drift train dashboards clean

lint: $(STAMP)
	$(BIN)/ruff check stream
	$(BIN)/mypy

env: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

$(STAMP_ALT): pyproject.toml requirements.lock
	test -x $(VENV_ALT)/bin/python || $(PYTHON_ALT) -m venv $(VENV_ALT)
	$(VENV_ALT)/bin/pip install -q --upgrade pip
	$(VENV_ALT)/bin/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP_ALT)

# Python 3.11 (the full suite) and 3.13 (the quick tests) are both supported.
test-alt-python: $(STAMP_ALT)
	$(VENV_ALT)/bin/python -m pytest -q $(QUICK_TESTS)

demo: $(STAMP)
	$(BIN)/mlstream demo

test: $(STAMP)
	bash scripts/install-system-deps.sh
	$(BIN)/python -m pytest -q
	$(MAKE) test-alt-python

bench: $(STAMP)
	$(BIN)/mlstream bench

bench-drift: $(STAMP)
	$(BIN)/mlstream bench-drift

train: $(STAMP)
	$(BIN)/mlstream train

dashboards: $(STAMP)
	$(BIN)/python -m dashboards.build

clean:
	rm -rf $(VENV) $(VENV_ALT)
