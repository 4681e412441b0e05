"""Scoring: an onnxruntime session checked against the feature definition, one call per batch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from stream.errors import ModelLoadError
from stream.registry import ModelCard, ModelStore


@dataclass(frozen=True)
class Model:
    """A loaded model: ``predict(X)`` gives one float score per row."""

    card: ModelCard
    session: ort.InferenceSession
    input_name: str
    # the model's column order as positions in the feature definition's (None: the same order)
    order: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return self.card.version

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Scores of feature rows given in the feature definition's column order."""
        if self.order is not None:
            X = np.ascontiguousarray(X[:, self.order])
        out = self.session.run([self.card.output], {self.input_name: X})[0]
        out = np.asarray(out, dtype=np.float64)
        if self.card.task == "classification":
            # probability of the positive class, contiguous for serialisation
            # [batch, 2] class probabilities, or one positive-class probability per row
            return np.ascontiguousarray(out[:, 1]) if out.ndim == 2 and out.shape[1] == 2 else out.reshape(len(X))
        return out.reshape(len(X))


def servable(task: str, scores: np.ndarray) -> np.ndarray:
    """Which scores may be served: finite, and for a classifier probabilities in [0, 1].

    >>> servable("classification", np.array([0.2, 1.5, np.nan])).tolist()
    [True, False, False]
    >>> servable("regression", np.array([-3.0, np.inf])).tolist()
    [True, False]
    """
    ok = np.isfinite(scores)
    if task == "classification":
        ok &= (scores >= 0.0) & (scores <= 1.0)
    return ok


WARMUP_ROWS = 64


def load_model(store: ModelStore, name: str, feature_columns: list[str],
               version: str | None = None) -> Model:
    """Load and check a model: its card's features must be ours (in any order: rows are
    reordered to the card's, a model trained elsewhere), and :func:`check_model` holds."""
    card, blob = store.load(name, version)
    where = store.root / name / card.version
    if sorted(card.features) != sorted(feature_columns) or len(set(card.features)) != len(card.features):
        missing = [f for f in feature_columns if f not in card.features]
        extra = [f for f in card.features if f not in feature_columns]
        raise ModelLoadError(where, "model features do not match the feature definition "
                             f"(missing {missing[:5]}, unexpected {extra[:5]})")
    order = None if list(card.features) == list(feature_columns) else \
        np.array([list(feature_columns).index(f) for f in card.features], dtype=np.int64)
    return dataclasses.replace(check_model(card, blob, where), order=order)


def check_model(card: ModelCard, blob: bytes, where: object) -> Model:
    """Open the ONNX bytes and check them against their card before anything is served.

    The input is one float tensor ``[batch, len(card.features)]``, the card's output exists, and
    a warm-up inference on rows drawn from the card's reference profile returns one finite
    score per row (a probability in [0, 1] for a classifier). ``ModelStore.promote`` runs
    the same check, so nothing is promoted that a worker would refuse.
    """
    options = ort.SessionOptions()
    # Leave a core for Kafka I/O and JSON work; batches are small enough for one thread.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(blob, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt files
        raise ModelLoadError(where, f"onnxruntime cannot load the model: {str(exc)[:200]}") from None
    width = len(card.features)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelLoadError(where, f"model has {len(inputs)} inputs; expected one feature tensor")
    inp = inputs[0]
    if inp.type != "tensor(float)":
        raise ModelLoadError(where, f"model input {inp.name!r} is {inp.type}; expected tensor(float)")
    if len(inp.shape) != 2 or inp.shape[-1] != width:
        raise ModelLoadError(where, f"model input {inp.name!r} has shape {inp.shape}; expected "
                             f"[batch, {width}] as its card's features say")
    if card.output not in [o.name for o in session.get_outputs()]:
        raise ModelLoadError(where, f"model has no output {card.output!r}")
    model = Model(card=card, session=session, input_name=inp.name)
    X = warmup_rows(card)
    try:
        scores = model.predict(X)
    except Exception as exc:  # onnxruntime's errors are untyped too
        raise ModelLoadError(where, f"warm-up inference failed: {str(exc)[:200]}") from None
    if scores.shape != (len(X),):
        raise ModelLoadError(where, f"warm-up inference gave scores of shape {scores.shape}; "
                             f"expected ({len(X)},)")
    bad = ~servable(card.task, scores)
    if bad.any():
        raise ModelLoadError(where, f"warm-up inference gave {int(bad.sum())} of {len(X)} scores "
                             f"that are not finite{' probabilities in [0, 1]' if card.task == 'classification' else ''} "
                             f"(first {scores[bad][0]!r}); refusing to serve it")
    return model


def warmup_rows(card: ModelCard, n: int = WARMUP_ROWS) -> np.ndarray:
    """Rows like the model's training data, from its card's reference profile: numeric
    features spread over their reference sample (min to max), one-hot columns cycling through
    the reference categories. Columns the profile does not describe are 0.

    Examples
    --------
    >>> card = ModelCard("m", "1", "", ("x", "c=a", "c=b"), "classification", "p", {
    ...     "reference_profile": {"features": [
    ...         {"name": "x", "kind": "numeric", "sample": [1.0, 2.0, 3.0]},
    ...         {"name": "c", "kind": "categorical", "categories": ["a", "b"]}]}})
    >>> warmup_rows(card, 4).tolist()
    [[1.0, 1.0, 0.0], [2.0, 0.0, 1.0], [2.0, 1.0, 0.0], [3.0, 0.0, 1.0]]
    """
    profile = card.reference_profile or {}
    specs = {str(f.get("name")): f for f in profile.get("features", []) if isinstance(f, dict)}
    X = np.zeros((n, len(card.features)), dtype=np.float32)
    for j, column in enumerate(card.features):
        spec = specs.get(column)
        if spec is not None and spec.get("kind") == "numeric" and spec.get("sample"):
            sample = np.sort(np.asarray(spec["sample"], dtype=np.float64))
            sample = sample[np.isfinite(sample)]
            if len(sample):
                X[:, j] = sample[np.linspace(0, len(sample) - 1, n).round().astype(int)]
            continue
        field, sep, value = column.partition("=")
        spec = specs.get(field)
        if sep and spec is not None and spec.get("categories"):
            categories = list(spec["categories"])
            X[:, j] = [categories[i % len(categories)] == value for i in range(n)]
    return X
