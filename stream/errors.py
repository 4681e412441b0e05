"""Typed errors. Every error a user can cause says what is wrong in one line."""

from __future__ import annotations


class StreamError(Exception):
    """Root of every mlstream error."""


class ConfigError(StreamError):
    """A setting or config file is wrong."""


class BrokerError(StreamError):
    """The Kafka cluster (or the embedded broker) cannot be reached or started."""


class KafkaCallError(BrokerError):
    """A Kafka call (commit, produce acknowledgement, metadata) failed or did not answer in time;
    the worker checks its topics and goes on, or stops. ``outputs_lost``: outputs of processed
    records may not have reached the brokers, so no later offset may be committed."""

    def __init__(self, message: str, *, outputs_lost: bool = False) -> None:
        super().__init__(message)
        self.outputs_lost = outputs_lost


class ValidationError(StreamError):
    """An event does not match its schema. ``reason`` is a short fixed code (a metric label)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ModelLoadError(StreamError):
    """A model file or card is missing, corrupt, or does not fit the feature definition."""

    def __init__(self, path: object, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class DomainError(StreamError):
    """A domain (schema + features) definition is inconsistent."""


class AlertError(StreamError):
    """An alert channel is misconfigured. The message names the setting, never its value."""


class ProfileError(StreamError, ValueError):
    """Reference data or a profile dict that cannot be used (also a ValueError, as before)."""


class ReplayError(StreamError, ValueError):
    """Bad replay input (unreadable line, unknown schema kind, ...)."""


class MessageError(StreamError):
    """A message on the bus is not the record it should be (``stream.messages.decode``)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"malformed {kind}: {' '.join(reason.split())[:300]}")
        self.kind = kind
