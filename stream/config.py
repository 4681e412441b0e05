"""One settings object for every mlstream process.

Values come, highest priority first, from keyword arguments, environment variables
(``MLSTREAM_`` prefix, ``__`` between nested names, e.g. ``MLSTREAM_KAFKA__BOOTSTRAP_SERVERS``),
a TOML file named by ``MLSTREAM_CONFIG`` (or ``--config`` on the command line), then defaults.
Secrets are ``SecretStr`` so they never print in reprs, logs or errors. A process reads them with
:func:`stream.config_load.load_settings` (a bad or unknown setting is one line, never its value).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

CONFIG_ENV_VAR = "MLSTREAM_CONFIG"
ENV_PREFIX = "MLSTREAM_"
# MLSTREAM_* variables that are not settings: read by tools, never by the Settings object
NOT_SETTINGS = frozenset({CONFIG_ENV_VAR, "MLSTREAM_TANSU_BIN", "MLSTREAM_KAFKA_HOME"})


class Section(BaseModel):
    """A settings section: immutable, and a misspelt key is an error rather than a silent default."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(Section):
    """How to reach the cluster. Production is Apache Kafka; the demo uses the embedded broker."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "mlstream"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    # Short long-polls keep latency low at low load (the embedded broker holds fetches the full wait)
    fetch_max_wait_ms: int = Field(default=50, ge=1, le=10_000)
    # A fetch returns once this many bytes wait or fetch_max_wait_ms passes: 1 answers at once;
    # more gives larger low-rate micro-batches (less CPU per event) for up to that much latency.
    fetch_min_bytes: int = Field(default=1, ge=1, le=64 * 1024 * 1024)
    # Producers send as soon as the loop yields: mlstream appends whole batches, lingering only delays
    linger_ms: int = Field(default=0, ge=0, le=1_000)
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    # At start a worker waits this long for the brokers (backoff doubling up to the max
    # between tries), reporting "not ready", before it gives up with one line.
    connect_timeout_s: float = Field(default=60.0, ge=0)
    connect_backoff_max_s: float = Field(default=5.0, gt=0)
    # Deadline on a Kafka call the client would otherwise retry forever (offset commit,
    # waiting for produce acknowledgements).
    request_deadline_s: float = Field(default=30.0, gt=0)
    # A worker that has read nothing for this long checks that its topics still exist (a
    # broker restarted without its data): it recreates them if it creates topics, else stops.
    topic_check_interval_s: float = Field(default=10.0, gt=0)

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_servers(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"bad broker address {server.strip()!r}: expected host:port")
        return value


class TopicSettings(Section):
    events: str = "events"
    labels: str = "labels"
    predictions: str = "predictions"
    dead_letter: str = "events.dlq"
    features: str = "mlstream.features"
    drift: str = "mlstream.drift"
    retrain: str = "mlstream.retrain-requests"
    changelog: str = "mlstream.entity-state-changelog"
    # A changelog record stays uncompacted this long: a restore as of the committed offset skips
    # a crashed worker's uncommitted records and needs the ones they would have compacted away
    changelog_min_compaction_lag_ms: int = Field(default=600_000, ge=0)
    model_updates: str = "mlstream.model-updates"
    # Labelled examples (model inputs as scored, joined with their delayed label) that the
    # trainer learns from; bounded by time and size retention.
    labelled_examples: str = "mlstream.labelled-examples"
    labelled_examples_retention_ms: int = Field(default=7 * 86_400_000, ge=60_000)
    labelled_examples_retention_bytes: int = Field(default=1 << 30, ge=1 << 20)
    # Models distributed to the scorers (cards, ONNX bytes in chunks, registry states): one
    # partition, compacted (stream/model_feed.py)
    models: str = "mlstream.models"
    # Scores of a shadow (or, after a promotion, the previous champion) beside the champion's,
    # partitioned like the events; never on ``predictions``. The monitor's verdicts on them.
    shadow_predictions: str = "mlstream.shadow-predictions"
    shadow_verdicts: str = "mlstream.shadow-verdicts"
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)


class ScoringSettings(Section):
    max_batch_size: int = Field(default=2_000, ge=1, le=100_000)
    max_wait_ms: int = Field(default=20, ge=0, le=10_000)
    # Events one by one at a few hundred/s: the broker may hold a fetch this long for more
    # (stream.kafka_pacing.FetchPacing: larger micro-batches, less CPU per event); 0: never.
    fetch_linger_ms: int = Field(default=5, ge=0, le=1_000)
    # Offsets are committed (every output acknowledged first) this often, or once this many
    # events wait (events, not batches: one-event batches had committed every 8 events).
    commit_interval_ms: int = Field(default=200, ge=1, le=60_000)
    max_uncommitted_events: int = Field(default=20_000, ge=1, le=10_000_000)
    # Entities idle longer than this are evicted from state (and tombstoned in the changelog).
    state_ttl_s: float = Field(default=7 * 86_400, gt=0)
    max_entities_per_partition: int = Field(default=2_000_000, ge=1)
    # Events timed further than this in the future (wall clock; milliseconds-for-seconds too) are
    # dead-lettered as out_of_range: they would move entity state and hold back the event-time merge.
    max_future_s: float = Field(default=86_400.0, ge=0)
    # A model whose scores are non-finite or out of range (classifier outside [0, 1]) on more
    # than this share of the last ``invalid_score_window`` scored events is swapped back to
    # the previous version (and alerted); each such event is dead-lettered as invalid_score.
    max_invalid_score_share: float = Field(default=0.01, ge=0, le=1)
    invalid_score_window: int = Field(default=1_000, ge=1)
    # How often a scorer looks for a newly promoted model version in the store.
    model_poll_interval_s: float = Field(default=2.0, gt=0, le=3_600)
    # exactly_once only: how long the broker keeps a crashed worker's transaction open (read_committed
    # readers, its successor's state restore included, wait behind it) before aborting it
    transaction_timeout_ms: int = Field(default=10_000, ge=1_000, le=900_000)
    # Share of entities (a stable hash of entity id and challenger version) served by the challenger
    # in shadow; 0: nobody. Its rows on ``predictions`` carry its version; the champion is measured on all.
    canary_share: float = Field(default=0.0, ge=0, le=0.5)


def _drift_config() -> type[BaseModel]:
    """Every tunable of the drift monitor (``DriftSettings``), as a settings section with the same
    names and defaults (README "Settings" lists them); checked by ``DriftSettings.validate``."""
    import dataclasses
    import typing

    from pydantic import create_model, model_validator

    from stream.monitoring.drift_settings import DriftSettings

    hints = typing.get_type_hints(DriftSettings)
    own = {"expected_run_length", "score_detector"}  # kept one level up, in MonitorSettings
    fields = {f.name: (hints[f.name], f.default) for f in dataclasses.fields(DriftSettings) if f.name not in own}

    def _check(self: BaseModel) -> BaseModel:
        try:
            DriftSettings(**self.model_dump()).validate()
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        return self

    # pydantic's create_model stubs reject field definitions built at runtime
    return create_model("DriftConfig", __config__=ConfigDict(frozen=True, extra="forbid"),  # type: ignore[call-overload]
                        __validators__={"check": model_validator(mode="after")(_check)}, **fields)


if TYPE_CHECKING:
    class DriftConfig(BaseModel):
        """What type checkers see: the real class is built from ``DriftSettings`` at import."""
else:
    DriftConfig = _drift_config()


class PerformanceSettings(Section):
    """Concept drift from joined labels (``PerformanceMonitor``) and the label-free estimate."""

    window: int = Field(default=1_000, ge=1)  # labelled events behind the rolling performance gauges
    windows: tuple[int, ...] = (200, 500, 2000, 5000)
    checks_per_window: int = Field(default=4, ge=1)
    # fallback reference when the model card has no holdout metrics: the first labelled events
    reference_size: int = Field(default=2_000, ge=1)
    # a rise counts when it passes both: absolute (error-rate points; relative MAE for regression)
    min_increase: float | None = Field(default=None, gt=0)
    min_relative_increase: float = Field(default=0.5, gt=0)
    leave_ratio: float = Field(default=0.5, gt=0, le=1)
    # a classifier's miss rate (1 - recall) on the labelled positives, against the holdout recall:
    # windows in labelled positives, and the absolute gate (recall points)
    miss_windows: tuple[int, ...] = (20, 50, 100, 250)
    min_miss_increase: float = Field(default=0.1, gt=0, lt=1)
    estimate_rows: int = Field(default=5_000, ge=100)  # recent scores behind the label-free estimate
    estimate_tolerance: float = Field(default=0.05, gt=0, lt=1)
    estimate_window: int = Field(default=2_000, ge=1)
    estimate_min_labels: int = Field(default=500, ge=1)


class MonitorSettings(Section):
    enabled: bool = True
    expected_run_length: int = Field(default=10_000_000, ge=1_000)
    retrain_cooldown_s: float = Field(default=3_600.0, ge=0)
    label_ttl_s: float = Field(default=7 * 86_400, gt=0)
    max_pending_labels: int = Field(default=1_000_000, ge=1)
    # Rows each monitor skips after start while entity state warms up. Only a stream that
    # starts with empty state (the demo) needs it: a restarted worker recovers its state.
    warmup_rows: int = Field(default=0, ge=0)
    # river's PageHinkley or ADWIN on the score, beside the calibrated tests. Off by default:
    # their false-alarm rate is not calibrated (see `make bench-drift`).
    score_detector: Literal["page_hinkley", "adwin"] | None = None
    drift: DriftConfig = DriftConfig()
    performance: PerformanceSettings = PerformanceSettings()
    # Beside a scorer (worker --role all) the monitor runs in a process of its own: no shared lock
    # or event loop ("thread": the scorer's process, its own loop); its metrics reach the parent's
    # /metrics every relay interval. That process's niceness (0: the scorer's) and, on Linux, the
    # idle scheduling policy while its newest input is at most idle_max_behind_s old
    # (stream/cpu_priority.py): the scorer gets the CPU first, the monitor catches up from Kafka.
    isolation: Literal["process", "thread"] = "process"
    nice: int = Field(default=10, ge=0, le=19)
    idle_priority: bool = True
    idle_max_behind_s: float = Field(default=10.0, gt=0, le=3_600)
    relay_interval_s: float = Field(default=0.5, gt=0, le=60)
    # The monitor commits its input offsets after every poll (0), or at most this often (and
    # whenever a poll comes back empty, before a partition is revoked and on stop), after every
    # output of them is acknowledged. Longer saves CPU at low rates; a monitor that dies hands
    # up to this much input to the standby again (at-least-once), which tests those rows twice.
    commit_interval_s: float = Field(default=0.0, ge=0, le=60)
    # The monitor's fetches wait at the broker until this many bytes are there or this many ms
    # have passed: at low rates one fetch brings hundreds of rows, which the fetch, the poll, the
    # commit and the tests pay once (drift tests need no millisecond latency).
    fetch_min_bytes: int = Field(default=1024 * 1024, ge=1)
    fetch_max_wait_ms: int = Field(default=500, ge=0, le=5_000)
    # At most this much per partition and fetch (a larger batch still comes whole): a poll on a
    # backlog decodes and tests a few MiB of feature batches, not all (peak memory, step time).
    max_partition_fetch_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)

    def drift_settings(self) -> Any:
        """The ``DriftSettings`` these settings describe."""
        from stream.monitoring.drift_settings import DriftSettings

        return DriftSettings(expected_run_length=self.expected_run_length, score_detector=self.score_detector,
                             **self.drift.model_dump())


class TrainerSettings(Section):
    # Where challengers learn from. None (default): the labelled-examples topic, i.e. the
    # stream's own scored events and their delayed labels. A JSONL file of labelled events
    # is the bootstrap option (as `mlstream train --data`).
    data: str | None = None
    warmup: int = Field(default=8_000, ge=0)  # leading events of a JSONL file that only build state
    # The newest labelled examples read per request, and how they are split (event-time order):
    # the newest holdout_rows judge champion and challenger; up to max_train_rows before them train.
    max_rows: int = Field(default=60_000, ge=1_000, le=5_000_000)
    holdout_rows: int = Field(default=5_000, ge=100)
    max_train_rows: int = Field(default=30_000, ge=100)
    min_train_rows: int = Field(default=1_000, ge=100)
    # "onset": train only on examples from the drift onset named in the request (when it names
    # one; else as "recent"), waiting until min_train_rows of them are labelled
    window: Literal["recent", "onset"] = "onset"
    read_timeout_s: float = Field(default=60.0, gt=0)
    # Promotion evidence: holdout size, paired bootstrap of the per-row loss difference
    # (log loss for classifiers, absolute error for regression), guardrails.
    min_holdout: int = Field(default=2_000, ge=1)
    min_positives: int = Field(default=30, ge=0)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    bootstrap: int = Field(default=1_000, ge=100, le=100_000)
    # Promoted when the interval's upper bound of (challenger - champion) is below
    # tolerance * champion loss: 0 asks for a challenger shown better.
    tolerance: float = Field(default=0.0, ge=0.0, le=1.0)
    max_calibration_error: float = Field(default=0.05, gt=0.0, le=1.0)
    max_latency_ratio: float = Field(default=3.0, ge=1.0)
    # A challenger that passes is first a shadow, scored beside the champion, until it has been
    # at least as good on this many live labelled events; 0 promotes it at once.
    shadow_labels: int = Field(default=0, ge=0)
    # The shadow is promoted when the paired bootstrap CI's upper bound of (shadow - champion)
    # live loss is at most shadow_tolerance * champion loss ("at least as good"), else rejected.
    shadow_tolerance: float = Field(default=0.02, ge=0.0, le=1.0)
    # After any promotion the previous champion is scored beside the new one for this many
    # live labelled events (0: no guard); the new one is rolled back when the CI's lower bound
    # of (new - previous) loss is above guard_tolerance * previous loss (shown worse).
    guard_labels: int = Field(default=2_000, ge=0)
    guard_tolerance: float = Field(default=0.05, ge=0.0, le=1.0)
    # A shadow or guard still without a live verdict after this long (too few labels, the
    # comparison dropped) is decided without one: the shadow rejected, the guard closed. 0: never.
    verdict_timeout_s: float = Field(default=2 * 86_400.0, ge=0)
    # A request without enough labels waits: retried this often, given up after max_wait_s.
    retry_interval_s: float = Field(default=30.0, gt=0)
    max_wait_s: float = Field(default=6 * 3_600.0, gt=0)
    max_waiting: int = Field(default=100, ge=1)
    seed: int = 0


class ModelFeedSettings(Section):
    """How promoted models reach the scorers (``stream/model_feed.py``)."""

    # "feed": scorers follow the compacted models topic and keep their local store as a cache;
    # publishers (`mlstream models promote|rollback|add|publish`, `mlstream train`, the trainer)
    # send every registry change there. "store": no topic; scorers poll a store shared by
    # everyone (one machine, or a shared volume) every scoring.model_poll_interval_s.
    mode: Literal["feed", "store"] = "feed"
    # Largest record value on the models topic; files are chunked to fit. Keep it under the
    # brokers' message.max.bytes (Kafka's default is 1 MiB). Larger records are refused.
    max_message_bytes: int = Field(default=900_000, ge=4_096, le=64 << 20)
    # A file announced larger than this is refused (bounds what a reader holds in memory).
    max_model_bytes: int = Field(default=1 << 30, ge=1 << 16)
    # A scorer whose local store has no servable version waits this long for the feed to
    # deliver the champion, then exits with one line.
    start_timeout_s: float = Field(default=120.0, gt=0)
    follow_wait_ms: int = Field(default=500, ge=1, le=10_000)  # a caught-up feed reader's fetch long-poll
    # Retired versions whose files stay on the topic (the newest ones: rollback targets); the
    # files of older retired and of rejected versions are tombstoned so compaction drops them.
    keep_retired: int = Field(default=2, ge=0)
    # A publish is one transaction (Apache Kafka): the broker aborts one that takes longer (a
    # large model's chunks), and a publisher cut short holds read_committed readers that long
    # unless the next publish fences it first.
    transaction_timeout_ms: int = Field(default=60_000, ge=1_000, le=900_000)


class AlertSettings(Section):
    slack_webhook_url: SecretStr | None = None
    generic_webhook_url: SecretStr | None = None
    # Drift events sent directly. Turn off where Prometheus + Alertmanager route the
    # MlstreamFeatureDrift alert (docker-compose.yml does), so each drift reaches Slack once.
    # Retraining requests and promotions are only ever sent directly.
    send_drift: bool = True
    queue_size: int = Field(default=1_000, ge=1)
    cooldown_s: float = Field(default=900.0, ge=0)
    max_retries: int = Field(default=5, ge=0, le=20)
    timeout_s: float = Field(default=5.0, gt=0)
    # Backoff after a 5xx or a timeout: base * 2**attempt with jitter, capped. A 429's
    # Retry-After is honoured as given; one longer than max_backoff_s gives the alert up.
    backoff_base_s: float = Field(default=0.5, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    # How long stop() keeps delivering what is queued before it drops the rest.
    drain_timeout_s: float = Field(default=10.0, ge=0)


class ErrorSettings(BaseModel, frozen=True):
    # Bound on an exception message in dead-letter headers and logs.
    max_message_chars: int = Field(default=300, ge=20, le=10_000)
    # A log line repeated identically is shown once, then as a count every this many seconds.
    log_repeat_interval_s: float = Field(default=30.0, ge=0)


class Settings(BaseSettings):
    """Everything a worker needs; see README "Settings" for the full list."""

    model_config = SettingsConfigDict(
        env_prefix="MLSTREAM_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    app_id: str = "mlstream"
    # at_least_once: outputs acknowledged before offsets are committed (duplicates after a
    # crash, de-duplicable by event id); exactly_once: one Kafka transaction per commit interval
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    domain: str = "stream.examples.payments:DOMAIN"
    model_store: Path = Path("models")
    model_name: str = "fraud"
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    scoring: ScoringSettings = ScoringSettings()
    monitor: MonitorSettings = MonitorSettings()
    alerts: AlertSettings = AlertSettings()
    trainer: TrainerSettings = TrainerSettings()
    model_feed: ModelFeedSettings = ModelFeedSettings()
    errors: ErrorSettings = ErrorSettings()
    # SIGTERM (or Ctrl-C) stops a worker within this many seconds, whatever it is waiting on.
    shutdown_grace_s: float = Field(default=15.0, gt=0, le=600)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9_108, ge=0, le=65_535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "json": one JSON object per line (for log shippers); "text": human-readable lines
    log_format: Literal["text", "json"] = "text"
    # Allocations between two young collections of Python's cyclic garbage collector in a monitor
    # process (Python's default: 700; 0 keeps it). The monitor keeps up to max_pending_labels
    # predictions waiting for labels, long-lived objects every collection walked: at 700 the
    # collector took ~20 % of its CPU. What exists when it starts is frozen out of collections.
    # Scorer processes keep Python's default (no gain measured there, and latency matters).
    gc_young_threshold: int = Field(default=50_000, ge=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_ENV_VAR)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)
