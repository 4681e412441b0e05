"""Training: features from the same code the scorer runs, a scikit-learn model, an ONNX export,
and a model card with the reference profile the drift monitor compares against.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream.domain import Domain, Fitted
from stream.errors import ValidationError
from stream.messages import SCORE_COLUMN
from stream.monitoring.profile import ReferenceProfile
from stream.registry import ModelStore


@dataclass(frozen=True)
class TrainingData:
    events: list[dict[str, Any]]
    labels: np.ndarray


def read_jsonl(path: Path | str, domain: Domain) -> TrainingData:
    """Labelled events, one JSON object per line with the domain's label field."""
    events, labels = [], []
    with Path(path).open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
                label = record.pop(domain.label_field)
                domain.schema.validate(record)
            except (orjson.JSONDecodeError, KeyError, ValidationError) as exc:
                raise ValueError(f"{path}:{lineno}: bad training record: {exc}") from None
            events.append(record)
            labels.append(float(label))
    return TrainingData(events, np.asarray(labels))


def default_fit(domain: Domain, X: np.ndarray, y: np.ndarray, seed: int) -> Fitted:
    """Scaled logistic regression (classification) or ridge (regression), as ONNX."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if domain.task == "classification":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1_000, random_state=seed))
    else:
        model = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    model.fit(X, y)
    width = len(domain.features.columns)
    options = {id(model.steps[-1][1]): {"zipmap": False}} if domain.task == "classification" else None
    onx = to_onnx(model, initial_types=[("features", FloatTensorType([None, width]))],
                  options=options, target_opset=17)
    output = "probabilities" if domain.task == "classification" else "variable"
    return Fitted(onx.SerializeToString(), output, " -> ".join(type(s).__name__ for _, s in model.steps))


def fit_model(domain: Domain, X: np.ndarray, y: np.ndarray, seed: int = 0) -> Fitted:
    """The domain's model family (its ``fit`` hook), else :func:`default_fit`."""
    if domain.task == "classification" and len(np.unique(y)) < 2:
        raise ValueError(f"training rows hold one class only ({len(y)} rows)")
    return (domain.fit or default_fit)(domain, np.asarray(X, dtype=np.float32), y, seed)


def onnx_scores(domain: Domain, fitted: Fitted, X: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(fitted.onnx, providers=["CPUExecutionProvider"])
    out = session.run([fitted.output], {session.get_inputs()[0].name: np.asarray(X, np.float32)})[0]
    return np.asarray(out[:, 1] if domain.task == "classification" else out.reshape(-1), np.float64)


def _metrics(domain: Domain, y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    from sklearn import metrics

    if domain.task == "classification":
        pred = score >= domain.threshold
        return {
            "auc": round(float(metrics.roc_auc_score(y, score)), 6),
            "log_loss": round(float(metrics.log_loss(y, np.clip(score, 1e-7, 1 - 1e-7))), 6),
            "precision": round(float(metrics.precision_score(y, pred, zero_division=0)), 6),
            "recall": round(float(metrics.recall_score(y, pred, zero_division=0)), 6),
            "positive_rate": round(float(y.mean()), 6),
        }
    return {"mae": round(float(np.mean(np.abs(y - score))), 6),
            "rmse": round(float(np.sqrt(np.mean((y - score) ** 2))), 6)}


def train(domain: Domain, data: TrainingData, store: ModelStore, *, name: str,
          version: str | None = None, seed: int = 0, warmup: int = 0,
          test_fraction: float = 0.3, promote: bool = True) -> dict[str, Any]:
    """Train, export, profile and store a model from labelled events (the bootstrap path,
    ``mlstream train --data``); returns its card.

    The first ``warmup`` events only build entity state (as a scorer's history would); the
    rest is split in time order into training and test rows.
    """
    X_all = domain.offline_features(data.events)
    X, y = X_all[warmup:], data.labels[warmup:]
    if len(X) < 100:
        raise ValueError(f"need at least 100 training rows after warm-up, got {len(X)}")
    split = int(len(X) * (1 - test_fraction))
    cols = domain.columns(data.events[warmup + split:])
    lineage = {"source": "events", "warmup": warmup}
    return train_arrays(domain, X[:split], y[:split], X[split:], y[split:], cols, store, name=name,
                        version=version, seed=seed, lineage=lineage, promote=promote)


def train_arrays(domain: Domain, X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                 test_columns: dict[str, Any], store: ModelStore, *, name: str,
                 version: str | None = None, seed: int = 0, lineage: dict[str, Any] | None = None,
                 promote: bool = False, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fit the domain's model family on feature rows, store it with its card; returns the card.

    The reference profile is the test rows' monitored features and scores: what the monitor
    should see while nothing drifts. ``test_columns`` gives the raw values of the monitored
    categorical fields for those rows (numeric ones come from ``X_test``) and, under the
    domain's time field, their event times (the profile then holds the daily cycle).
    """
    from stream import __version__

    fitted = fit_model(domain, X, y, seed)
    score = onnx_scores(domain, fitted, X_test)
    monitored = domain.monitored_columns(test_columns, X_test)
    monitored[SCORE_COLUMN] = score
    kinds = {**domain.features.monitored, SCORE_COLUMN: "numeric"}
    profile = ReferenceProfile.from_columns(monitored, kinds, seed=seed,
                                            event_ts=domain.event_times(test_columns))
    version = version or _next_version(store, name)
    card = {
        "name": name,
        "version": version,
        "domain": domain.name,
        "task": domain.task,
        "threshold": domain.threshold,
        "features": domain.features.columns,
        "input": {"name": "features", "dtype": "float32", "shape": [None, X.shape[1]]},
        "output": fitted.output,
        "training": {
            "seed": seed, "rows_train": len(X), "rows_test": len(X_test),
            "metrics": _metrics(domain, y_test, score), "estimator": fitted.estimator,
            **({"labels_positive": int((y > 0.5).sum())} if domain.task == "classification" else {}),
        },
        "lineage": {"created_at": _utc_now(), "mlstream_version": __version__, **(lineage or {})},
        "reference_profile": profile.to_dict(),
        **(extra or {}),
    }
    store.save(card, fitted.onnx, promote=promote)
    return card


def _utc_now() -> str:
    from datetime import datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def holdout_metrics(domain: Domain, predict: Any, data: TrainingData, *, warmup: int = 0,
                    test_fraction: float = 0.3) -> dict[str, float]:
    """A model's metrics on the held-out rows :func:`train` would keep for testing, so a
    champion and a challenger are compared on exactly the same recent rows."""
    X = domain.offline_features(data.events)[warmup:]
    y = data.labels[warmup:]
    split = int(len(X) * (1 - test_fraction))
    return _metrics(domain, y[split:], predict(X[split:]))


def _next_version(store: ModelStore, name: str) -> str:
    numbers = [int(v) for v in store.versions(name) if v.isdigit()]
    return str(max(numbers, default=0) + 1)


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with path.open("w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
