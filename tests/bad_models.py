"""Real ONNX models that misbehave, built with onnx's helper: what a broken training run ships."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from stream.registry import ModelStore


def nan_model(width: int, *, nan_above: float | None = None, output: str = "probabilities") -> bytes:
    """A classifier ``[N, width] -> [N, 2]`` probabilities. Its score is NaN for every row, or,
    with ``nan_above``, only for rows whose first feature exceeds it (a model that passes a
    warm-up on its reference data and breaks on live data it never saw)."""
    w = numpy_helper.from_array(np.full((width, 1), 0.01, np.float32), "w")
    nan = numpy_helper.from_array(np.array([np.nan], np.float32), "nan")
    one = numpy_helper.from_array(np.array([1.0], np.float32), "one")
    limit = numpy_helper.from_array(np.array([np.inf if nan_above is None else nan_above], np.float32), "limit")
    idx = numpy_helper.from_array(np.array([0], np.int64), "idx")
    nodes = [
        helper.make_node("MatMul", ["features", "w"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p_ok"]),
        helper.make_node("Gather", ["features", "idx"], ["x0"], axis=1),
        helper.make_node("Greater", ["x0", "limit"], ["broken"]),
    ]
    if nan_above is None:
        nodes.append(helper.make_node("Mul", ["p_ok", "nan"], ["p"]))
    else:
        nodes.append(helper.make_node("Where", ["broken", "nan", "p_ok"], ["p"]))
    nodes += [helper.make_node("Sub", ["one", "p"], ["q"]),
              helper.make_node("Concat", ["q", "p"], [output], axis=1)]
    graph = helper.make_graph(
        nodes, "bad", [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None, 2])],
        initializer=[w, nan, one, limit, idx])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def save_version(store_root: Path, version: str, blob: bytes, *, promote: bool = True,
                 name: str = "fraud") -> None:
    """Write ``blob`` as a new version with version 1's card (features, reference profile)."""
    card = json.loads((store_root / name / "1" / "card.json").read_text())
    ModelStore(store_root).save({**card, "version": version}, blob, promote=promote)


def point_current_at(store_root: Path, version: str, name: str = "fraud") -> None:
    """What an operator editing CURRENT by hand does: no checks at all."""
    (store_root / name / "CURRENT").write_text(f"{version}\n")


def raising_model(width: int, *, raise_at: float = 10.0) -> bytes:
    """A classifier whose ONNX call raises (an index out of bounds inside onnxruntime) on any
    batch holding a row whose first feature is at least ``raise_at``."""
    w = numpy_helper.from_array(np.full((width, 1), 0.01, np.float32), "w")
    table = numpy_helper.from_array(np.zeros(int(raise_at), np.float32), "table")
    idx = numpy_helper.from_array(np.array([0], np.int64), "idx")
    one = numpy_helper.from_array(np.array([1.0], np.float32), "one")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [
        helper.make_node("MatMul", ["features", "w"], ["z"]),
        helper.make_node("Gather", ["features", "idx"], ["x0"], axis=1),  # [N, 1]
        helper.make_node("Squeeze", ["x0", "axes"], ["x0_flat"]),
        helper.make_node("Floor", ["x0_flat"], ["x0_floor"]),
        helper.make_node("Cast", ["x0_floor"], ["i"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "i"], ["bias"], axis=0),  # raises past the table
        helper.make_node("Unsqueeze", ["bias", "axes"], ["bias_col"]),
        helper.make_node("Add", ["z", "bias_col"], ["zb"]),
        helper.make_node("Sigmoid", ["zb"], ["p"]),
        helper.make_node("Sub", ["one", "p"], ["q"]),
        helper.make_node("Concat", ["q", "p"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "raising", [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        initializer=[w, table, idx, one, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def inverted_model(blob: bytes) -> bytes:
    """``blob`` (a classifier with a ``probabilities`` [N, 2] output) with its two class
    probabilities swapped: valid probabilities, checks pass, and it is about as wrong as a
    model can be (what a label flipped in a training pipeline ships)."""
    model = onnx.load_from_string(blob)
    graph = model.graph
    for node in graph.node:
        node.output[:] = ["raw_probabilities" if o == "probabilities" else o for o in node.output]
    graph.node.extend([
        helper.make_node("Split", ["raw_probabilities"], ["p0", "p1"], axis=1, num_outputs=2),
        helper.make_node("Concat", ["p1", "p0"], ["probabilities"], axis=1),
    ])
    if not any(o.version >= 18 for o in model.opset_import if o.domain in ("", "ai.onnx")):
        graph.node[-2].attribute.pop()  # num_outputs is opset 18; older Split infers two halves
    onnx.checker.check_model(model)
    return model.SerializeToString()
