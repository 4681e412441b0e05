"""Zombie fencing for exactly-once (KIP-447): a transaction's input offsets are committed with
the consumer group generation and member id of the assignment they were read under.

aiokafka sends ``TxnOffsetCommit`` v0, which carries neither, so the group coordinator accepts
it from anyone. A scorer frozen past its session timeout (a paused VM, SIGSTOP) woke with a
transaction open and committed it: its outputs and offsets landed beside those of the worker
the group had given its partitions to (18 duplicated predictions in one run of
``test_a_scorer_frozen_past_its_session_timeout_commits_nothing_its_successor_scored``). Sent as
v3 with the generation, the commit of a member the group dropped is refused by the broker
itself (``ILLEGAL_GENERATION``, ``UNKNOWN_MEMBER_ID``): the transaction becomes abortable and
the worker aborts it and rewinds, as on any failed transaction commit. A check made by the
worker before committing would leave a gap between the check and the commit; this has none.

This reaches into aiokafka's sender (one method of one producer instance, versions pinned in
``pyproject.toml``); a broker without v3 gets v0, as before.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiokafka.errors as Errors
from aiokafka.client import CoordinationType
from aiokafka.producer.sender import TxnOffsetCommitHandler
from aiokafka.producer.transaction_manager import TransactionState
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.transaction import TxnOffsetCommitRequest_v0
from aiokafka.protocol.types import (
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

# the errors by which the group coordinator says "this member's generation is over"
FENCED = (Errors.IllegalGenerationError, Errors.UnknownMemberIdError, Errors.RebalanceInProgressError)
FENCED_INSTANCE_ID = 82  # aiokafka has no class for it


@dataclass(frozen=True)
class GroupMember:
    """The group generation and member id an assignment was received under."""

    generation: int
    member_id: str


# no member the broker knows: its commits are refused (-1 and "" would ask for no check at all)
NOT_A_MEMBER = GroupMember(0, "mlstream-not-a-member")


def membership(consumer: Any) -> GroupMember:
    """This consumer's generation and member id, read as an assignment arrives; if aiokafka
    already reset them (a heartbeat refused meanwhile: this member is out), one the broker refuses."""
    coordinator = getattr(consumer, "_coordinator", None)
    generation = getattr(coordinator, "generation", -1)
    member_id = getattr(coordinator, "member_id", "")
    return GroupMember(generation, member_id) if generation >= 0 and member_id else NOT_A_MEMBER


class TxnOffsetCommitResponse_v3(Response):
    API_KEY = 28
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(("partition_index", Int32), ("error_code", Int16), ("tags", TaggedFields))),
            ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class TxnOffsetCommitRequest_v3(RequestStruct):
    API_KEY = 28
    API_VERSION = 3
    FLEXIBLE_VERSION = True
    RESPONSE_TYPE = TxnOffsetCommitResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("group_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", CompactString("utf-8")),
        ("group_instance_id", CompactString("utf-8")),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32),
                ("committed_offset", Int64),
                ("committed_leader_epoch", Int32),
                ("committed_metadata", CompactString("utf-8")),
                ("tags", TaggedFields))),
            ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class FencedTxnOffsetCommit(Request[TxnOffsetCommitRequest_v0 | TxnOffsetCommitRequest_v3]):
    """v3 with the member's generation when the broker has it, else v0 (no fencing).

    >>> import io
    >>> req = FencedTxnOffsetCommit("app-scorer-1", "app-scorer", 7, 0, [("events", [(1, 42, "")])],
    ...                             GroupMember(3, "member-1"))
    >>> v3 = TxnOffsetCommitRequest_v3.decode(io.BytesIO(req.build(TxnOffsetCommitRequest_v3).encode()))
    >>> v3.generation_id, v3.member_id, v3.group_instance_id, v3.topics
    (3, 'member-1', None, [('events', [(1, 42, -1, '', {})], {})])
    >>> req.build(TxnOffsetCommitRequest_v0).topics  # an older broker: no generation to send
    [('events', [(1, 42, '')])]
    """

    API_KEY = 28

    def __init__(self, transactional_id: str, group_id: str, producer_id: int, producer_epoch: int,
                 topics: list[tuple[str, list[tuple[int, int, str]]]], member: GroupMember | None):
        self.args = (transactional_id, group_id, producer_id, producer_epoch)
        self.topics = topics
        self.member = member

    def build(self, request_struct_class: type[Any]) -> Any:
        if request_struct_class.API_VERSION < 3:
            return request_struct_class(*self.args, self.topics)
        # no member (never assigned): -1 and "" ask for no check, as v0 does
        generation, member_id = (self.member.generation, self.member.member_id) if self.member else (-1, "")
        topics: list[Any] = [(name, [(p, offset, -1, metadata, {}) for p, offset, metadata in parts], {})
                             for name, parts in self.topics]
        return request_struct_class(*self.args, generation, member_id, None, topics, {})


class _Fenced(TxnOffsetCommitHandler):
    def __init__(self, sender: Any, offsets: Any, group_id: str, member: GroupMember | None):
        super().__init__(sender, offsets, group_id)
        self._member = member

    def create_request(self) -> FencedTxnOffsetCommit:
        txn = self._sender._txn_manager
        topics: dict[str, list[tuple[int, int, str]]] = collections.defaultdict(list)
        for tp, offset in sorted(self._offsets.items()):
            topics[tp.topic].append((tp.partition, offset.offset, offset.metadata))
        return FencedTxnOffsetCommit(txn.transactional_id, self._group_id, txn.producer_id, txn.producer_epoch,
                                     list(topics.items()), self._member)

    def handle_response(self, resp: Any) -> float | None:
        if resp.API_VERSION < 3:
            return super().handle_response(resp)
        codes = [(t[0], [(p[0], p[1]) for p in t[1]]) for t in resp.topics]
        for _, partitions in codes:
            for _, code in partitions:
                error = Errors.for_code(code) if code != FENCED_INSTANCE_ID else None
                if error is None or error in FENCED:
                    _abortable(self._sender._txn_manager, Errors.CommitFailedError(
                        f"the group refused this transaction's offsets ({code}): this member's "
                        "generation is over and its partitions belong to another worker"))
                    return None
        return super().handle_response(_V0Errors(codes))


def _abortable(txn: Any, exc: Exception) -> None:
    """An abortable error, as Kafka's own producer treats a refused offset commit: the worker
    aborts and rewinds. Not aiokafka's ``error_transaction``: it forgets the transaction's
    partitions, and the abort that follows then ends it locally without telling the broker,
    leaving it open (read_committed readers and the successor's restore stuck behind it) until
    ``transaction_timeout_ms``."""
    txn._transition_to(TransactionState.ABORTABLE_ERROR)
    for _, _, fut in txn._pending_txn_offsets:  # send_offsets_to_transaction raises it
        fut.set_exception(exc)
    txn._pending_txn_offsets.clear()
    waiter = txn._transaction_waiter  # a commit attempted now raises it (an abort replaces the waiter)
    if not waiter.done():
        waiter.set_exception(exc)
        waiter.exception()  # taken: no "never retrieved" log when only the abort follows


@dataclass
class _V0Errors:
    """A v3 response as aiokafka's v0 handler reads it (``errors``: topic, [(partition, code)])."""

    errors: list[tuple[str, list[tuple[int, int]]]]


def fence_offset_commits(producer: Any, member: Callable[[], GroupMember | None]) -> None:
    """Make ``producer`` (transactional, not yet started or started) commit transaction offsets
    with ``member()``: the generation under which the offsets' records were assigned."""
    sender = producer._sender

    async def commit(offsets: Any, group_id: str) -> None:  # aiokafka's own, but with _Fenced
        if not offsets:
            return
        try:
            node_id = await sender._find_coordinator(CoordinationType.GROUP, group_id)
        except Errors.GroupAuthorizationFailedError as exc:
            sender._txn_manager.error_transaction(exc)
            return
        await _Fenced(sender, offsets, group_id, member()).do(node_id)

    sender._do_txn_offset_commit = commit
