# The environment lives in .venv and is rebuilt only when pyproject.toml or requirements.lock change.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Apache Kafka's jars (ops/kafka/pom.xml), fetched by Maven once, again only when the pom changes.
KAFKA_LIB := .mlstream/kafka/lib
KAFKA_STAMP := $(KAFKA_LIB)/.installed

# The second supported Python the tests run on (broker-free tests and every doctest).
# (pyenv's versions are looked up directly: its shims only serve the global version)
PYTHON_ALT ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13 $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.13 python3.12 2>/dev/null))
VENV_ALT := .venv-alt
STAMP_ALT := $(VENV_ALT)/.installed
QUICK_TESTS := stream tests/test_features.py tests/test_schema.py tests/test_drift.py tests/test_labels.py \
	tests/test_profile.py tests/test_drift_stats.py tests/test_replay.py tests/test_metrics_doc.py

.PHONY: env kafka demo test test-faults test-alt-python lint bench bench-drift bench-sustained train dashboards clean

lint: $(STAMP)
	$(BIN)/ruff check stream
	$(BIN)/mypy

env: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

kafka: $(KAFKA_STAMP)

$(KAFKA_STAMP): ops/kafka/pom.xml
	@command -v java >/dev/null || { echo "make kafka: java not found: install OpenJDK 17 (Apache Kafka 4 needs it)" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "make kafka: mvn not found: install Maven (it fetches Apache Kafka's jars)" >&2; exit 1; }
	rm -rf $(KAFKA_LIB)  # no jars of an older pin left on the class path
	mvn -q -B -Dstyle.color=never -f ops/kafka/pom.xml -Dkafka.lib=$(abspath $(KAFKA_LIB)) dependency:copy-dependencies
	touch $(KAFKA_STAMP)

$(STAMP_ALT): pyproject.toml requirements.lock
	@test -n "$(PYTHON_ALT)" || { echo "make test-alt-python: no Python 3.13 or 3.12 found (set PYTHON_ALT)" >&2; exit 1; }
	test -x $(VENV_ALT)/bin/python || $(PYTHON_ALT) -m venv $(VENV_ALT)
	$(VENV_ALT)/bin/pip install -q --upgrade pip
	$(VENV_ALT)/bin/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP_ALT)

# Python 3.11 (the full suite) and 3.13 (the quick tests) are both supported.
test-alt-python: $(STAMP_ALT)
	$(VENV_ALT)/bin/python -m pytest -q $(QUICK_TESTS)

# The fault campaign on Apache Kafka (worker SIGKILLs, scaling and rebalances, broker kill and
# absence, poison, bad models, a failing Slack, secrets at DEBUG), checked from the output
# topics; prints the matrix. About 12 minutes; FAULT_SUITE_SCALE=0.3 shortens every schedule.
test-faults: $(STAMP) $(KAFKA_STAMP)
	$(BIN)/python -m pytest -q -s -m faults tests/faults --timeout 900

demo: $(STAMP)
	$(BIN)/mlstream demo

test: $(STAMP) $(KAFKA_STAMP)
	bash scripts/install-system-deps.sh
	$(BIN)/ruff check stream
	$(BIN)/mypy
	$(BIN)/python -m pytest -q
	$(MAKE) test-faults
	$(MAKE) test-alt-python

# make bench ARGS="--json" (or --profile /tmp/batch.prof, --runs 5, ...)
bench: $(STAMP)
	$(BIN)/mlstream bench $(ARGS)

# 30 minutes at 2,000 events/s on Apache Kafka, a row a minute (throughput, lag, RSS, p99):
# make bench-sustained ARGS="--events 10000000 --json" (or --minutes 5, --rate 5000, --demo, ...)
bench-sustained: $(STAMP) $(KAFKA_STAMP)
	$(BIN)/mlstream bench-sustained $(ARGS)

bench-drift: $(STAMP)
	$(BIN)/mlstream bench-drift

train: $(STAMP)
	$(BIN)/mlstream train

dashboards: $(STAMP)
	$(BIN)/python -m dashboards.build

clean:
	rm -rf $(VENV) $(VENV_ALT)
