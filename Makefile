# The environment lives in .venv and is rebuilt only when pyproject.toml changes.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Apache Kafka's jars (ops/kafka/pom.xml), fetched by Maven once, again only when the pom changes.
KAFKA_LIB := .mlstream/kafka/lib
KAFKA_STAMP := $(KAFKA_LIB)/.installed

.PHONY: env kafka demo test bench bench-drift train dashboards clean

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

kafka: $(KAFKA_STAMP)

$(KAFKA_STAMP): ops/kafka/pom.xml
	@command -v java >/dev/null || { echo "make kafka: java not found: install OpenJDK 17 (Apache Kafka 4 needs it)" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "make kafka: mvn not found: install Maven (it fetches Apache Kafka's jars)" >&2; exit 1; }
	rm -rf $(KAFKA_LIB)  # no jars of an older pin left on the class path
	mvn -q -B -Dstyle.color=never -f ops/kafka/pom.xml dependency:copy-dependencies
	touch $(KAFKA_STAMP)

demo: $(STAMP)
	$(BIN)/mlstream demo

test: $(STAMP) $(KAFKA_STAMP)
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
