"""Committed offsets read as *stable* under exactly-once (KIP-447's ``require_stable``): a worker
given partitions waits until no transaction that commits their offsets is still open.

A transaction commits its input offsets in two steps: ``TxnOffsetCommit`` puts them in the
transaction, ``EndTxn`` commits it, and the group coordinator writes the commit marker a moment
later. aiokafka reads committed offsets with ``OffsetFetch`` v1-v3, which answer the last
*committed* offset, ignoring one still pending. A worker frozen (SIGSTOP, a paused VM) between the
two steps lost its partitions; its successor read the old offsets and scored their events again,
and then the woken worker's ``EndTxn`` committed the same events' predictions: 18 duplicated
predictions in one CI run of ``test_a_scorer_frozen_past_its_session_timeout_commits_nothing_its_
successor_scored``. The same gap opens in an ordinary rebalance, between the revoked owner's
``EndTxn`` and its marker. Sent as v7 with ``require_stable``, the broker answers
``UNSTABLE_OFFSET_COMMIT`` while such a transaction is open, and the successor asks again until it
is decided (committed, or aborted after ``scoring.transaction_timeout_ms``). Kafka's own consumer
does the same under ``isolation_level=read_committed``.

This reaches into aiokafka's group coordinator (one method of one consumer instance, versions
pinned in ``pyproject.toml``); a broker without v7 is asked as before.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import aiokafka.errors as Errors
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.commit import (
    OffsetFetchRequest_v1,
    OffsetFetchRequest_v2,
    OffsetFetchRequest_v3,
)
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.structs import OffsetAndMetadata, TopicPartition

log = logging.getLogger(__name__)

UNSTABLE_OFFSET_COMMIT = 88  # aiokafka has no class for it


class UnstableOffsetCommitError(Errors.KafkaError):
    """A transaction that commits this partition's offset is still open: ask again."""

    errno = UNSTABLE_OFFSET_COMMIT
    retriable = True
    message = "UNSTABLE_OFFSET_COMMIT"


class OffsetFetchResponse_v7(Response):
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32),
                ("committed_offset", Int64),
                ("committed_leader_epoch", Int32),
                ("metadata", CompactString("utf-8")),
                ("error_code", Int16),
                ("tags", TaggedFields))),
            ("tags", TaggedFields))),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v7(RequestStruct):
    API_KEY = 9
    API_VERSION = 7
    FLEXIBLE_VERSION = True
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partition_indexes", CompactArray(Int32)),
            ("tags", TaggedFields))),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


class StableOffsetFetch(Request[OffsetFetchRequest_v1 | OffsetFetchRequest_v2 | OffsetFetchRequest_v3
                                | OffsetFetchRequest_v7]):
    """v7 with ``require_stable`` when the broker has it, else the newest it has (no wait).

    >>> import io
    >>> req = StableOffsetFetch("app-scorer", [("events", [0, 3])])
    >>> v7 = OffsetFetchRequest_v7.decode(io.BytesIO(req.build(OffsetFetchRequest_v7).encode()))
    >>> v7.group_id, v7.topics, v7.require_stable
    ('app-scorer', [('events', [0, 3], {})], True)
    >>> req.build(OffsetFetchRequest_v3).topics  # an older broker: nothing to wait for
    [('events', [0, 3])]
    """

    API_KEY = 9

    def __init__(self, group_id: str, partitions: list[tuple[str, list[int]]]):
        self.group_id = group_id
        self.partitions = partitions

    def build(self, request_struct_class: type[Any]) -> Any:
        if request_struct_class.API_VERSION < 7:
            return request_struct_class(self.group_id, self.partitions)
        return request_struct_class(self.group_id, [(t, ps, {}) for t, ps in self.partitions], True, {})


def committed_rows(resp: Any) -> list[tuple[TopicPartition, int, str, int]]:
    """(partition, offset, metadata, error code) of an OffsetFetch response of any version read
    here; a group-level error (v2+: the group still loading, another coordinator) as a row of its
    own with partition -1, so that it is raised rather than read as "no committed offset".

    >>> committed_rows(OffsetFetchResponse_v7(0, [("events", [(0, 42, -1, None, 0, {})], {})], 14, {}))
    [(TopicPartition(topic='', partition=-1), -1, '', 14), (TopicPartition(topic='events', partition=0), 42, '', 0)]
    """
    rows = []
    group_error = getattr(resp, "error_code", 0)
    if group_error:
        rows.append((TopicPartition("", -1), -1, "", group_error))
    for t in resp.topics:
        topic, partitions = t[0], t[1]
        for p in partitions:
            if resp.API_VERSION >= 7:
                partition, offset, _, metadata, code = p[:5]
            else:
                partition, offset, metadata, code = p
            rows.append((TopicPartition(topic, partition), offset, metadata or "", code))
    return rows


def subscribe(consumer: Any, topics: list[str], listener: Any, *, stable: bool) -> None:
    """Subscribe a started consumer (its first assignment reads committed offsets); ``stable``
    (exactly-once): as stable offsets."""
    if stable:
        read_stable_offsets(consumer)
    consumer.subscribe(topics, listener=listener)


def read_stable_offsets(consumer: Any) -> None:
    """Make ``consumer`` (started, with a group, not yet subscribed: its first assignment reads
    committed offsets) read them as stable: the position it starts an assigned partition at,
    and ``consumer.committed()``."""
    coordinator = consumer._coordinator
    waiting: set[TopicPartition] = set()  # logged once per wait, not once per retry

    async def fetch(partitions: Any) -> dict[TopicPartition, OffsetAndMetadata]:
        by_topic: dict[str, list[int]] = collections.defaultdict(list)
        for tp in partitions:
            by_topic[tp.topic].append(tp.partition)
        resp = await coordinator._send_req(StableOffsetFetch(coordinator.group_id, sorted(by_topic.items())))
        offsets = {}
        for tp, offset, metadata, code in committed_rows(resp):
            if code == UNSTABLE_OFFSET_COMMIT:
                if tp not in waiting:
                    waiting.add(tp)
                    log.info("the committed offset of %s waits for an open transaction to be decided", tp)
                raise UnstableOffsetCommitError()
            error = Errors.for_code(code)
            if error is Errors.NotCoordinatorForGroupError:
                coordinator.coordinator_dead()
                raise error()
            if error is Errors.UnknownTopicOrPartitionError:
                log.warning("OffsetFetch: unknown topic %s", tp.topic)
                continue
            if error is Errors.GroupAuthorizationFailedError:
                raise error(coordinator.group_id)
            if error is not Errors.NoError:
                raise error()  # aiokafka retries the retriable ones (the group still loading)
            waiting.discard(tp)
            if offset != -1:  # -1: nothing committed
                offsets[tp] = OffsetAndMetadata(offset, metadata)
        return offsets

    coordinator._do_fetch_commit_offsets = fetch
