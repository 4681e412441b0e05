"""Panels of the model dashboard's "Lifecycle" row: how versions reach the scorers and whether
they stay. A challenger scored in shadow beside the champion, the guard that scores the previous
champion after a promotion, the live verdicts the monitor publishes on them, the trainer's
decisions (promote, reject, rollback, keep, ...) and the model feed that carries versions to
the scorers (``README.md``, shadow and model feed sections; metrics in ``docs/metrics.md``).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import timeseries

from dashboards.panels import BOTH, INST, RATE, default_timeseries, per_model, query


def shadow_scoring() -> timeseries.Panel:
    return per_model(default_timeseries("Shadow and guard scoring", "Events per second scored by "
                               "versions that do not serve: a challenger in shadow (role shadow) "
                               "or the previous champion guarding a promotion (role previous), by "
                               "outcome. invalid or failed means the version misbehaves; the "
                               "champion's predictions are never affected.", "ops")
            .with_target(query(f"sum by (version, role, outcome) (rate(mlstream_shadow_predictions_total{{{BOTH}}}[{RATE}]))",
                               "v{{version}} {{role}} {{outcome}}")))


def live_loss() -> timeseries.Panel:
    return per_model(default_timeseries("Live labelled loss: champion vs shadow or previous",
                               "Log loss (classification) or MAE (regression) of the versions in a "
                               "running comparison, on the same labelled events. The shadow is "
                               "promoted when it is at least as good as the champion; after a "
                               "promotion the guard rolls back when the new champion is worse than "
                               "the previous one.", "short")
            .with_target(query(f"max by (version, role) (mlstream_live_labelled_loss{{{BOTH}}})",
                               "{{role}} v{{version}}")))


def comparison_progress() -> timeseries.Panel:
    return per_model(default_timeseries("Comparison progress", "Labelled events compared so far for "
                               "the shadow or previous version; the verdict comes at "
                               "trainer.shadow_labels (shadow) or trainer.guard_labels (previous).",
                               "short")
            .with_target(query(f"max by (version, role) (mlstream_shadow_labelled_events{{{BOTH}}})",
                               "{{role}} v{{version}}")))


def decisions() -> timeseries.Panel:
    return per_model(default_timeseries("Verdicts and trainer decisions", "Live verdicts the "
                               "monitor published (shadow: promote or reject; previous: rollback "
                               "or keep) and the decisions the trainer took on them and on "
                               "retraining requests (promote, shadow, reject, wait, expired, "
                               "failed, rollback, keep). A rollback also fires "
                               "MlstreamModelRolledBack.", "short")
            .with_target(query(f"sum by (role, verdict) (increase(mlstream_shadow_verdicts_total{{{BOTH}}}[{RATE}]))",
                               "verdict {{role}} {{verdict}}"))
            .with_target(query(f"sum by (decision) (increase(mlstream_trainer_decisions_total{{{BOTH}}}[{RATE}]))",
                               "trainer {{decision}}", ref="B")))


def model_feed() -> timeseries.Panel:
    return (default_timeseries("Model feed", "Model versions each scorer received on the model feed "
                               "(checked and written to its local store), and records or versions "
                               "it refused by reason (oversized, malformed, checksum, "
                               "missing_chunk): a refusal leaves the scorer on its current model "
                               "and fires MlstreamModelFeedRefused.", "short")
            .with_target(query(f"sum by (instance) (increase(mlstream_model_feed_versions_total{{{INST}}}[{RATE}]))",
                               "received {{instance}}"))
            .with_target(query(f"sum by (reason) (increase(mlstream_model_feed_refused_total{{{INST}}}[{RATE}]))",
                               "refused {{reason}}", ref="B")))
