"""Scoring: an onnxruntime session checked against the feature definition, one call per batch."""

from __future__ import annotations

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


def load_model(store: ModelStore, name: str, feature_columns: list[str],
               version: str | None = None) -> Model:
    """Load and check a model: its card's features and its ONNX input must fit our features.

    The card's feature order is the model's input order; it may be any permutation of the
    feature definition's columns (a model trained elsewhere), and rows are reordered to it.
    """
    card, blob = store.load(name, version)
    where = store.root / name / card.version
    if sorted(card.features) != sorted(feature_columns) or len(set(card.features)) != len(card.features):
        missing = [f for f in feature_columns if f not in card.features]
        extra = [f for f in card.features if f not in feature_columns]
        raise ModelLoadError(where, "model features do not match the feature definition "
                             f"(missing {missing[:5]}, unexpected {extra[:5]})")
    order = None if list(card.features) == list(feature_columns) else \
        np.array([list(feature_columns).index(f) for f in card.features], dtype=np.int64)
    options = ort.SessionOptions()
    # Leave a core for Kafka I/O and JSON work; batches are small enough for one thread.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(blob, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt files
        raise ModelLoadError(where, f"onnxruntime cannot load the model: {str(exc)[:200]}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelLoadError(where, f"model has {len(inputs)} inputs; expected one feature tensor")
    inp = inputs[0]
    if inp.type != "tensor(float)":
        raise ModelLoadError(where, f"model input {inp.name!r} is {inp.type}; expected tensor(float)")
    width = inp.shape[-1] if inp.shape else None
    if len(inp.shape) != 2 or width != len(feature_columns):
        raise ModelLoadError(where, f"model input {inp.name!r} has shape {inp.shape}; expected "
                             f"[batch, {len(feature_columns)}]")
    if card.output not in [o.name for o in session.get_outputs()]:
        raise ModelLoadError(where, f"model has no output {card.output!r}")
    return Model(card=card, session=session, input_name=inp.name, order=order)
