"""What the scorer's loop does when a Kafka call fails: every client error becomes the
project's own (:class:`~stream.errors.KafkaCallError`), a topic check that cannot answer is
skipped until the next, and an exactly-once transaction holding lost outputs is aborted
before the worker goes back to its committed offsets."""

from __future__ import annotations

import logging

from aiokafka.errors import KafkaError

from stream.config import Settings
from stream.errors import BrokerError, KafkaCallError
from stream.kafka import check_topics, missing_topics, within
from stream.scoring.transactions import OutputTransaction

log = logging.getLogger(__name__)


def as_call_error(exc: KafkaCallError | KafkaError) -> KafkaCallError:
    """A raw client error from inside a batch (a failed acknowledgement, an offset lookup) may
    have cost outputs: going back to the committed offsets is always safe.

    >>> from aiokafka.errors import NodeNotReadyError
    >>> e = as_call_error(NodeNotReadyError("node 1")); (str(e), e.outputs_lost)
    ('Kafka call failed: NodeNotReadyError', True)
    >>> e = KafkaCallError("offset commit not answered"); as_call_error(e) is e
    True
    """
    if isinstance(exc, KafkaCallError):
        return exc
    return KafkaCallError(f"Kafka call failed: {type(exc).__name__}", outputs_lost=True)


async def topics_changed(settings: Settings, *, recreate: bool) -> bool:
    """Were the topics lost (and recreated)? A broker that cannot be reached right now says
    nothing about its topics: the clients reconnect by themselves, so check again later. Only a
    worker that may not recreate them stops (BrokerError)."""
    try:
        missing = await missing_topics(settings)
    except BrokerError as exc:
        log.warning("topic check skipped: %s", exc)
        return False
    if not missing:
        return False
    try:
        return await check_topics(settings, recreate=recreate, missing=missing)
    except KafkaCallError as exc:  # a node died while they were recreated: at the next check
        log.warning("recreating the topics failed: %s; trying again", exc)
        return False


async def abort_transaction(txn: OutputTransaction, deadline_s: float) -> bool:
    """Outputs were lost: the open transaction holds outputs of records about to be read
    again, so it must not commit with later ones. False if it could not be aborted in time."""
    try:
        return await within(txn.abort(), deadline_s, "transaction abort")
    except KafkaCallError:
        return False
