"""Dead letters: an event that failed, its original bytes unchanged, and why and where from in
headers (topic ``events.dlq``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec

from stream.messages.data import Headers, Message
from stream.schema import DEAD_LETTER_REASONS

# Dead-letter headers (UTF-8 values); the original record's headers follow them.
REASON_HEADER = "mlstream.error.reason"
MESSAGE_HEADER = "mlstream.error.message"
SOURCE_TOPIC_HEADER = "mlstream.source.topic"
SOURCE_PARTITION_HEADER = "mlstream.source.partition"
SOURCE_OFFSET_HEADER = "mlstream.source.offset"
ERROR_CLASS_HEADER = "mlstream.error.class"
# a producer's own header named like one of ours is kept under this prefix: ours win
PRODUCER_HEADER_PREFIX = "producer."
MAX_ERROR_MESSAGE = 1_000

ErrorReason = Literal[DEAD_LETTER_REASONS]  # type: ignore[valid-type]  # built from the one list of codes
_Digits = Annotated[str, msgspec.Meta(pattern="^[0-9]+$")]


class DeadLetterHeaders(msgspec.Struct, kw_only=True):
    """The headers of a dead letter, as an object (the schema of topic ``events.dlq``)."""

    reason: ErrorReason = msgspec.field(name=REASON_HEADER)
    message: Annotated[str, msgspec.Meta(max_length=MAX_ERROR_MESSAGE)] = msgspec.field(name=MESSAGE_HEADER)
    source_topic: str = msgspec.field(name=SOURCE_TOPIC_HEADER)
    source_partition: _Digits = msgspec.field(name=SOURCE_PARTITION_HEADER)
    source_offset: _Digits = msgspec.field(name=SOURCE_OFFSET_HEADER)
    error_class: Annotated[str, msgspec.Meta(
        description="the exception's class (reason processing_error only)")] = msgspec.field(
        default="", name=ERROR_CLASS_HEADER)


class DeadLetter(msgspec.Struct, kw_only=True):
    """An event that failed: its original key and bytes, unchanged (a tombstone stays one),
    and why and where from. mlstream's headers come first and replace any of the producer's
    with the same name, which is kept as ``producer.<name>``: a consumer reading the headers
    into a dict sees ours.

    Examples
    --------
    >>> dl = DeadLetter(key=b"u1", value=b"{bad", reason="not_json", message="not JSON",
    ...                 source_topic="events", source_partition=3, source_offset=42,
    ...                 headers=[("mlstream.error.reason", b"spoofed"), ("trace", b"t1")])
    >>> m = dl.to_message()
    >>> m.value, [name for name, _ in m.headers][:2]
    (b'{bad', ['mlstream.error.reason', 'mlstream.error.message'])
    >>> dict(m.headers)["mlstream.error.reason"], dict(m.headers)["producer.mlstream.error.reason"]
    (b'not_json', b'spoofed')
    >>> DeadLetter.from_kafka(m.key, m.value, m.headers, m.timestamp_ms) == dl
    True
    """

    key: bytes | None
    value: bytes | None
    reason: str
    message: str
    source_topic: str
    source_partition: int
    source_offset: int
    headers: Headers = []  # the original record's headers
    timestamp_ms: int | None = None
    error_class: str | None = None  # the exception's class, for processing_error

    def to_message(self) -> Message:
        headers = [
            (REASON_HEADER, self.reason.encode()),
            (MESSAGE_HEADER, self.message[:MAX_ERROR_MESSAGE].encode(errors="replace")),
            (SOURCE_TOPIC_HEADER, self.source_topic.encode()),
            (SOURCE_PARTITION_HEADER, str(self.source_partition).encode()),
            (SOURCE_OFFSET_HEADER, str(self.source_offset).encode()),
        ]
        if self.error_class is not None:
            headers.append((ERROR_CLASS_HEADER, self.error_class.encode()))
        headers += [(PRODUCER_HEADER_PREFIX + k if k in _OURS else k, v) for k, v in self.headers]
        return Message(self.key, self.value, headers, self.timestamp_ms)

    @classmethod
    def from_kafka(cls, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]],
                   timestamp_ms: int | None = None) -> DeadLetter:
        """Read one back from the dead-letter topic (missing headers read as ``"?"`` / -1)."""
        h = {k: v.decode(errors="replace") for k, v in headers if k in _OURS}

        def number(name: str) -> int:
            text = h.get(name, "")
            return int(text) if text.isdigit() else -1

        def original(name: str) -> str:
            return name[len(PRODUCER_HEADER_PREFIX):] if name.startswith(PRODUCER_HEADER_PREFIX) \
                and name[len(PRODUCER_HEADER_PREFIX):] in _OURS else name

        return cls(key=key, value=value, reason=h.get(REASON_HEADER, "?"),
                   message=h.get(MESSAGE_HEADER, ""), source_topic=h.get(SOURCE_TOPIC_HEADER, "?"),
                   source_partition=number(SOURCE_PARTITION_HEADER),
                   source_offset=number(SOURCE_OFFSET_HEADER),
                   headers=[(original(k), v) for k, v in headers if k not in _OURS],
                   timestamp_ms=timestamp_ms, error_class=h.get(ERROR_CLASS_HEADER))


_OURS = frozenset({REASON_HEADER, MESSAGE_HEADER, SOURCE_TOPIC_HEADER, SOURCE_PARTITION_HEADER,
                   SOURCE_OFFSET_HEADER, ERROR_CLASS_HEADER})
