"""Tools kept out of the engine: embedded broker, Apache Kafka launcher, demo, bench, traffic."""
