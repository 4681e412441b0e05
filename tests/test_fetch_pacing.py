"""The scorer's fetch pacing on a real consumer: events one by one at a few hundred per second make
the broker hold fetches (larger micro-batches), a burst or a pause makes it answer at once again, and
the consumer keeps reading every event through the switches. (The policy itself: the doctest of
stream.kafka_pacing.FetchPacing; its CPU effect: ``make bench``, cpu_vs_raw_loop_at_500.)"""

from __future__ import annotations

from aiokafka import TopicPartition

from stream.examples.simulate import PaymentSimulator
from stream.kafka import make_consumer, start_client
from stream.kafka_pacing import FetchPacing
from stream.tools.traffic import produce


async def test_fetches_are_held_while_events_trickle_and_answered_at_once_after_a_burst(settings):
    await produce(settings, PaymentSimulator(seed=1), 40, rate=0)
    consumer = make_consumer(settings, group_id=None)
    await start_client(consumer, settings.kafka.bootstrap_servers)
    try:
        tps = [TopicPartition(settings.topics.events, p) for p in range(settings.topics.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        fetcher = consumer._fetcher
        pacing = FetchPacing(consumer, linger_ms=settings.scoring.fetch_linger_ms)
        assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (1, settings.kafka.fetch_max_wait_ms)
        seen, t = 0, 0.0
        for _ in range(40):  # polls returning one event every 2 ms: 500 events/s, one by one
            if seen < 40:
                got = await consumer.getmany(timeout_ms=5_000, max_records=1)
                seen += sum(map(len, got.values()))
            t += 0.002
            pacing.observe(1, now=t)
        assert fetcher._fetch_max_wait_ms == settings.scoring.fetch_linger_ms
        assert fetcher._fetch_min_bytes > 1
        pacing.observe(20, now=t + 0.05)  # a burst after a gap: nothing to gather by holding fetches
        assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (1, settings.kafka.fetch_max_wait_ms)
        while seen < 40:  # every event is still read after the switches
            got = await consumer.getmany(timeout_ms=5_000)
            assert got, "the consumer stopped reading after the fetch settings changed"
            seen += sum(map(len, got.values()))
        assert seen == 40
    finally:
        await consumer.stop()


def test_zero_or_a_consumer_batching_at_the_broker_turns_pacing_off():
    class Fetcher:
        _fetch_min_bytes, _fetch_max_wait_ms = 1, 50

    class Consumer:
        _fetcher = Fetcher()

    for linger, min_bytes in ((0, 1), (5, 65_536)):  # off, or left to a consumer batching at the broker
        Consumer._fetcher._fetch_min_bytes = min_bytes
        pacing = FetchPacing(Consumer(), linger_ms=linger)  # type: ignore[arg-type]
        for i in range(50):
            pacing.observe(1, now=i * 0.002)
        assert (Consumer._fetcher._fetch_min_bytes, Consumer._fetcher._fetch_max_wait_ms) == (min_bytes, 50)
