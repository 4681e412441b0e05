"""Direct notifications against a local Slack stand-in: what Slack receives, retries, limits,
de-duplication, and the webhook URL never showing in logs, metrics or errors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from prometheus_client import generate_latest

from stream.alerts import AlertError, Notifier
from stream.config import AlertSettings
from stream.messages import DriftEvent, ModelUpdate, RetrainRequest
from stream.metrics import Metrics
from stream.tools.tally import wait_until
from tests.slack_standin import SlackStandIn, bad, rate_limited, server_error, slow

# the fixtures run in the session's event loop (pyproject); so do these tests
pytestmark = pytest.mark.asyncio(loop_scope="session")

SECRET_PATH = "/services/T0SECRET/B0SECRET/xoxSECRETtoken123"


def drift_event(feature: str = "amount_zscore", kind: str = "data_drift", index: int = 7) -> dict[str, Any]:
    return {
        "index": index, "kind": kind, "features": [feature],
        "evidence": [{"feature": feature, "test": "ks", "statistic": 0.31, "p_value": 1.2e-7,
                      "threshold": 0.12, "effect_size": 0.84}],
        "model": "fraud", "model_version": "1", "detected_at": 1_750_000_000.0,
    }


@pytest.fixture()
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn() as s:
        yield s


@pytest.fixture()
async def notifier(slack: SlackStandIn) -> AsyncIterator[Callable[..., Notifier]]:
    made: list[Notifier] = []

    def make(**overrides: Any) -> Notifier:
        opts: dict[str, Any] = dict(slack_webhook_url=slack.url(SECRET_PATH), timeout_s=0.5,
                                    backoff_base_s=0.05, max_backoff_s=5.0, cooldown_s=900.0)
        opts.update(overrides)
        n = Notifier(AlertSettings(**opts), overrides.pop("metrics", None) or Metrics.create())
        made.append(n)
        return n

    yield make
    for n in made:
        await n.stop(timeout_s=1.0)


def outcome(n: Notifier, channel: str, name: str) -> float:
    value = n.metrics.registry.get_sample_value("mlstream_alert_deliveries_total",
                                                {"channel": channel, "outcome": name})
    return value or 0.0


async def settle(n: Notifier, channel: str, final: int, timeout_s: float = 10.0) -> None:
    """Wait until ``final`` deliveries have a final outcome on ``channel``."""
    def done() -> bool:
        return sum(outcome(n, channel, o) for o in ("sent", "rejected", "failed", "rate_limited")) >= final
    assert await wait_until(done, timeout_s), "deliveries did not finish in time"


async def test_drift_event_arrives_as_block_kit_with_the_evidence(notifier, slack):
    n = notifier()
    await n.start()
    assert n.submit_drift(drift_event())
    await settle(n, "slack", 1)
    [req] = slack.received
    msg = req.json()
    assert req.path == SECRET_PATH
    assert msg["text"] == "Drift detected: fraud v1"
    assert [b["type"] for b in msg["blocks"]] == ["header", "section", "section", "context"]
    evidence = msg["blocks"][2]["text"]["text"]
    assert "*amount_zscore* (ks): statistic 0.31 vs threshold 0.12, p-value 1.20e-07" in evidence
    assert "effect size 0.84" in evidence
    assert outcome(n, "slack", "sent") == 1


async def test_drift_not_sent_directly_when_alertmanager_routes_it(notifier, slack):
    n = notifier(send_drift=False)
    await n.start()
    assert not n.submit_drift(drift_event())
    assert n.submit_retrain({"request_id": "abc", "model": "fraud", "model_version": "1",
                             "reason": "data_drift", "features": ["amount_zscore"],
                             "evidence": drift_event()["evidence"], "requested_at": 0.0})
    await settle(n, "slack", 1)
    assert [r.json()["text"] for r in slack.received] == ["Retraining requested: fraud v1"]


async def test_retrain_and_promotion_messages(notifier, slack):
    n = notifier()
    await n.start()
    assert n.submit_retrain({"request_id": "abc", "model": "fraud", "model_version": "1",
                             "reason": "data_drift", "features": ["amount_zscore"],
                             "evidence": drift_event()["evidence"], "requested_at": 0.0})
    assert n.submit_promotion({"model": "fraud", "model_version": "2", "previous_version": "1"})
    await settle(n, "slack", 2)
    texts = sorted(r.json()["text"] for r in slack.received)
    assert texts == ["Model fraud version 2 promoted", "Retraining requested: fraud v1"]


async def test_the_bus_records_themselves_can_be_submitted(notifier, slack):
    """The monitor hands over its typed records: same keys, same texts, NaN still null."""
    n = notifier(generic_webhook_url=slack.url("/hooks/generic"))
    await n.start()
    ev = drift_event()
    ev["evidence"][0]["p_value"] = float("nan")
    assert n.submit_drift(DriftEvent(**ev))
    assert n.submit_retrain(RetrainRequest(
        schema_version=1, request_id="0" * 32, model="fraud", model_version="1", reason="data_drift",
        features=["hour"], evidence=[], drift_index=7, requested_at=0.0, cooldown_s=3600.0))
    assert n.submit_promotion(ModelUpdate(model="fraud", model_version="2", decision="promote",
                                          promoted=True, previous_version="1"))
    await settle(n, "slack", 3)
    await settle(n, "webhook", 3)
    texts = sorted(r.json()["text"] for r in slack.received if "text" in r.json())
    assert texts == ["Drift detected: fraud v1", "Model fraud version 2 promoted",
                     "Retraining requested: fraud v1"]
    bodies = {r.json()["type"]: r.json()["payload"] for r in slack.received if "type" in r.json()}
    assert bodies["drift"]["evidence"][0]["p_value"] is None
    assert bodies["promotion"]["previous_version"] == "1" and bodies["retrain"]["model_version"] == "1"


async def test_429_waits_for_retry_after_then_delivers(notifier, slack):
    slack.queue(rate_limited(1))
    n = notifier()
    await n.start()
    n.submit_drift(drift_event())
    await settle(n, "slack", 1)
    first, second = slack.received
    assert second.at - first.at >= 0.95  # Retry-After: 1 honoured
    assert (outcome(n, "slack", "retried"), outcome(n, "slack", "sent")) == (1, 1)


async def test_a_persistent_429_holds_back_the_next_alert_too(notifier, slack):
    slack.queue(rate_limited(1), rate_limited(1), rate_limited(1))
    n = notifier(max_retries=1)
    await n.start()
    n.submit_drift(drift_event("amount"))
    await settle(n, "slack", 1)
    assert outcome(n, "slack", "rate_limited") == 1
    n.submit_drift(drift_event("country"))  # another subject: not a cooled-down repeat
    await settle(n, "slack", 2)
    first, last_retry, next_alert = slack.received[:3]
    assert next_alert.at - last_retry.at >= 0.95  # the channel's Retry-After held for it too


async def test_retry_after_longer_than_allowed_gives_up(notifier, slack):
    slack.queue(rate_limited(3600))
    n = notifier()
    await n.start()
    n.submit_drift(drift_event())
    await settle(n, "slack", 1)
    assert len(slack.received) == 1 and outcome(n, "slack", "rate_limited") == 1


async def test_5xx_and_timeouts_are_retried_with_backoff(notifier, slack):
    slack.queue(server_error(), slow(2.0), server_error())
    n = notifier()  # timeout 0.5 s: the slow answer counts as a timeout
    await n.start()
    n.submit_drift(drift_event())
    await settle(n, "slack", 1)
    assert len(slack.received) == 4
    assert (outcome(n, "slack", "retried"), outcome(n, "slack", "sent")) == (3, 1)


async def test_retries_are_bounded(notifier, slack):
    slack.queue(*[server_error()] * 10)
    n = notifier(max_retries=2)
    await n.start()
    n.submit_drift(drift_event())
    await settle(n, "slack", 1)
    assert len(slack.received) == 3
    assert (outcome(n, "slack", "retried"), outcome(n, "slack", "failed")) == (2, 1)


@pytest.mark.parametrize("code,status", [("invalid_payload", 400), ("no_service", 404),
                                         ("channel_is_archived", 410)])
async def test_permanent_4xx_is_not_retried(notifier, slack, code, status):
    slack.queue(bad(code, status))
    n = notifier()
    await n.start()
    n.submit_drift(drift_event())
    await settle(n, "slack", 1)
    assert len(slack.received) == 1
    assert (outcome(n, "slack", "rejected"), outcome(n, "slack", "retried")) == (1, 0)


async def test_cooldown_per_model_feature_kind(notifier, slack):
    now = [1000.0]
    n = notifier(cooldown_s=60.0)
    n.clock = lambda: now[0]
    await n.start()
    assert n.submit_drift(drift_event("amount_zscore"))
    assert not n.submit_drift(drift_event("amount_zscore", index=8))  # same key: suppressed
    assert n.submit_drift(drift_event("hour_of_day"))  # another feature
    assert n.submit_drift(drift_event("amount_zscore", kind="drift_resolved"))  # another kind
    now[0] += 61.0
    assert n.submit_drift(drift_event("amount_zscore", index=9))  # cooldown over
    await settle(n, "slack", 4)
    assert len(slack.received) == 4 and outcome(n, "slack", "suppressed") == 1


async def test_full_queue_drops_without_blocking_and_counts(notifier, slack):
    slack.queue(slow(1.0))
    n = notifier(queue_size=2, cooldown_s=0.0, timeout_s=5.0)
    await n.start()
    t0 = time.perf_counter()
    results = [n.submit_drift(drift_event(f"f{i}")) for i in range(50)]
    assert time.perf_counter() - t0 < 0.1  # never waits on Slack
    assert await wait_until(lambda: outcome(n, "slack", "sent") >= 1, 10)
    queued = sum(results)
    assert 2 <= queued <= 3  # the queue's size, plus the one the sender may already hold
    assert outcome(n, "slack", "dropped") == 50 - queued


async def test_generic_webhook_gets_the_json_event(notifier, slack):
    n = notifier(slack_webhook_url=None, generic_webhook_url=slack.url("/hooks/generic"))
    await n.start()
    ev = drift_event()
    ev["evidence"][0]["p_value"] = float("nan")
    n.submit_drift(ev)
    await settle(n, "webhook", 1)
    body = slack.received[0].json()
    assert body["type"] == "drift"
    assert body["payload"]["features"] == ["amount_zscore"]
    assert body["payload"]["evidence"][0]["p_value"] is None


async def test_stop_drains_the_queue_within_its_deadline(notifier, slack):
    n = notifier(cooldown_s=0.0)
    await n.start()
    for i in range(5):
        n.submit_drift(drift_event(f"f{i}"))
    await n.stop(timeout_s=10.0)
    assert len(slack.received) == 5 and outcome(n, "slack", "sent") == 5


async def test_stop_drops_what_it_cannot_deliver_by_the_deadline(notifier, slack):
    slack.queue(*[server_error()] * 20)
    n = notifier(cooldown_s=0.0, backoff_base_s=5.0)
    await n.start()
    for i in range(3):
        n.submit_drift(drift_event(f"f{i}"))
    t0 = time.monotonic()
    await n.stop(timeout_s=0.5)
    assert time.monotonic() - t0 < 3.0
    assert outcome(n, "slack", "dropped") == 2  # the one in flight was cancelled with the task


async def test_a_bad_url_is_a_typed_error_that_does_not_echo_it():
    with pytest.raises(AlertError) as err:
        Notifier(AlertSettings(slack_webhook_url="hooks.example/" + SECRET_PATH), Metrics.create())
    assert "slack_webhook_url" in str(err.value) and "SECRET" not in str(err.value)


async def test_the_webhook_url_never_shows_in_logs_metrics_or_errors(notifier, slack, caplog):
    """Every path that can log: success, 429, 5xx, timeout, 4xx, connection refused, at DEBUG."""
    caplog.set_level(logging.DEBUG)  # the root logger: everything, slack_sdk and aiohttp too
    for name in ("slack_sdk", "aiohttp", "asyncio"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    slack.queue(rate_limited(1), server_error(), slow(2.0), bad("invalid_payload"))
    n = notifier(cooldown_s=0.0, generic_webhook_url=slack.url(SECRET_PATH + "/generic"))
    await n.start()
    n.submit_drift(drift_event("a"))
    n.submit_retrain({"request_id": "r", "model": "fraud", "model_version": "1", "reason": "x",
                      "features": ["b"], "evidence": []})
    n.submit_promotion({"model": "fraud", "model_version": "3"})
    await settle(n, "slack", 3, timeout_s=20)
    await settle(n, "webhook", 3, timeout_s=20)
    await n.stop()

    # an unreachable URL (connection refused) and a misconfigured one
    with SlackStandIn() as gone:
        dead_url = gone.url(SECRET_PATH)
    dead = notifier(slack_webhook_url=dead_url, max_retries=1)
    await dead.start()
    dead.submit_drift(drift_event("c"))
    await settle(dead, "slack", 1)
    errors = []
    try:
        Notifier(AlertSettings(slack_webhook_url="ftp://x" + SECRET_PATH), Metrics.create())
    except AlertError as exc:
        errors.append(f"{exc!r} {exc}")

    secret_bits = [SECRET_PATH, "T0SECRET", "xoxSECRETtoken123"]
    logs = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "Sending a request" not in logs  # slack_sdk's DEBUG lines are off for our logger
    assert len(caplog.records) > 5  # we did log (retries, rejection, connection errors)
    metrics_text = generate_latest(n.metrics.registry).decode() + generate_latest(dead.metrics.registry).decode()
    for bit in secret_bits:
        assert bit not in logs
        assert bit not in metrics_text
        assert bit not in " ".join(errors)
        assert bit not in repr(n) + repr(n.settings) + str(n.settings)
    assert outcome(dead, "slack", "failed") == 1
