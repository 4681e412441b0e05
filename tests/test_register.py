"""`mlstream models add` with a model a user brings: LightGBM exported through onnxmltools,
its columns in its own order; mismatched models are refused with one line and exit 2."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from stream import ReferenceProfile
from stream.cli import main
from stream.examples.payments import DOMAIN
from stream.registry import ModelStore
from stream.scoring.model import load_model
from stream.examples.simulate import simulated

WARMUP = 1_000
COLUMNS = DOMAIN.features.columns
MODEL_ORDER = list(reversed(COLUMNS))  # the outside model's own column order


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("register")
    train, ref = simulated(6_000, seed=11), simulated(4_000, seed=12)
    X = DOMAIN.offline_features(train.events)[WARMUP:]
    return {"dir": d, "X_model": X[:, [COLUMNS.index(c) for c in MODEL_ORDER]], "y": train.labels[WARMUP:],
            "ref": ref}


def _lightgbm(X: np.ndarray, y: np.ndarray, input_name: str = "input") -> tuple[object, bytes]:
    import lightgbm as lgb
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = lgb.LGBMClassifier(n_estimators=40, num_leaves=15, random_state=0, verbose=-1).fit(X, y)
    onx = onnxmltools.convert_lightgbm(model, initial_types=[(input_name, FloatTensorType([None, X.shape[1]]))],
                                       zipmap=False, target_opset=15)
    return model, onx.SerializeToString()


def _write_reference(path: Path, ref, labels: bool = True) -> Path:
    with path.open("w") as fh:
        for event, label in zip(ref.events, ref.labels):
            fh.write(json.dumps({**event, "label": int(label)} if labels else event) + "\n")
    return path


def test_register_lightgbm_in_its_own_column_order(data: dict, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MLSTREAM_MODEL_FEED__MODE", "store")  # no broker here: nothing to publish to
    model, blob = _lightgbm(data["X_model"], data["y"])
    onnx_path = tmp_path / "lgbm.onnx"
    onnx_path.write_bytes(blob)
    order = tmp_path / "columns.txt"
    order.write_text("\n".join(MODEL_ORDER) + "\n")
    reference = _write_reference(tmp_path / "reference.jsonl", data["ref"])
    store = tmp_path / "store"

    assert main(["models", "add", "--onnx", str(onnx_path), "--reference", str(reference), "--store", str(store),
                 "--name", "fraud-lgbm", "--feature-order", str(order), "--warmup", str(WARMUP), "--promote"]) == 0
    assert "registered fraud-lgbm version 1" in capsys.readouterr().out

    card = json.loads((store / "fraud-lgbm" / "1" / "card.json").read_text())
    assert card["sha256"] == hashlib.sha256(blob).hexdigest()
    assert card["features"] == MODEL_ORDER and card["input"] == {"name": "input", "dtype": "float32",
                                                                 "shape": [None, len(COLUMNS)]}
    assert card["output"] == "probabilities" and card["training"]["source"] == "registered"
    assert card["training"]["rows_reference"] == 3_000
    assert card["training"]["metrics"]["auc"] > 0.8  # the simulator's fraud is learnable
    profile = ReferenceProfile.from_dict(card["reference_profile"])
    assert set(profile.features) == set(DOMAIN.features.monitored) | {"score"}
    assert (store / "fraud-lgbm" / "CURRENT").read_text().strip() == "1"

    # the scorer hands rows in the domain's order; the card's order reaches the model
    loaded = load_model(ModelStore(store), "fraud-lgbm", COLUMNS)
    X_domain = DOMAIN.offline_features(data["ref"].events)[WARMUP:]
    X_model = X_domain[:, [COLUMNS.index(c) for c in MODEL_ORDER]]
    import onnxruntime as ort

    raw = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    expected = raw.run(["probabilities"], {"input": np.ascontiguousarray(X_model)})[0][:, 1]
    np.testing.assert_allclose(loaded.predict(X_domain), expected, atol=1e-6)
    # and that is LightGBM's own answer (ONNX trees compare in float32: a few rows sit on a split)
    agree = np.isclose(expected, model.predict_proba(X_model)[:, 1], atol=1e-5)  # type: ignore[attr-defined]
    assert agree.mean() > 0.99
    assert np.quantile(profile.numeric["score"].sample, 0.5) == pytest.approx(np.median(expected), abs=0.05)


def _graph_model(tmp_path: Path, elem_type: int, nan: bool = False, sigmoid: bool = True,
                 batch: int | None = None) -> Path:
    """A hand-built ONNX classifier: input [batch, n] of ``elem_type``, output [batch] scores."""
    x = helper.make_tensor_value_info("input", elem_type, [batch, len(COLUMNS)])
    y = helper.make_tensor_value_info("probabilities", elem_type, [None])
    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], keepdims=0, axes=[1]),
             helper.make_node("Sigmoid" if sigmoid else "Identity", ["m"], ["s"])]
    # sqrt(-sigmoid) is NaN on every row
    nodes += [helper.make_node("Neg", ["s"], ["n"]), helper.make_node("Sqrt", ["n"], ["probabilities"])] if nan \
        else [helper.make_node("Identity", ["s"], ["probabilities"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    path = tmp_path / "graph.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("case, expected", [
    ("width", "has shape [None, 5]; the domain has 21 features"),
    ("input_name", "model has no input 'features' (inputs: ['input'])"),
    ("dtype", "is tensor(double); expected tensor(float)"),
    ("non_finite", "is not finite on 3000 of 3000 reference rows"),
    ("order", "--feature-order: must list each of the domain's 21 features once"),
    ("not_probability", "a classifier's score must be a probability in [0, 1]"),
    ("fixed_batch", "has a fixed batch size 1; export it with a dynamic first dimension"),
])
def test_mismatched_model_is_refused_in_one_line(case: str, expected: str, data: dict, tmp_path: Path,
                                                 capsys) -> None:
    args: list[str] = []
    if case == "width":
        onnx_path = tmp_path / "narrow.onnx"
        onnx_path.write_bytes(_lightgbm(data["X_model"][:, :5], data["y"])[1])
    elif case == "input_name":
        onnx_path = tmp_path / "lgbm.onnx"
        onnx_path.write_bytes(_lightgbm(data["X_model"][:2_000], data["y"][:2_000])[1])
        args = ["--input-name", "features"]
    elif case == "order":
        onnx_path = _graph_model(tmp_path, TensorProto.FLOAT)
        args = ["--feature-order", ",".join(COLUMNS[:-1])]
    elif case == "not_probability":
        onnx_path = _graph_model(tmp_path, TensorProto.FLOAT, sigmoid=False)
    elif case == "fixed_batch":
        onnx_path = _graph_model(tmp_path, TensorProto.FLOAT, batch=1)
    else:
        onnx_path = _graph_model(tmp_path, TensorProto.DOUBLE if case == "dtype" else TensorProto.FLOAT,
                                 nan=case == "non_finite")
    reference = _write_reference(tmp_path / "reference.jsonl", data["ref"], labels=False)
    store = tmp_path / "store"
    code = main(["models", "add", "--onnx", str(onnx_path), "--reference", str(reference), "--store", str(store),
                 "--warmup", str(WARMUP), *args])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1, err
    assert not store.exists()  # nothing written


def test_a_model_that_fits_registers_without_labels(data: dict, tmp_path: Path) -> None:
    onnx_path = _graph_model(tmp_path, TensorProto.FLOAT)
    reference = _write_reference(tmp_path / "reference.jsonl", data["ref"], labels=False)
    # --store given to the `models` group, as the other verbs take it
    assert main(["models", "--store", str(tmp_path / "store"), "add", "--onnx", str(onnx_path),
                 "--reference", str(reference), "--version", "7"]) == 0
    # an existing version is never overwritten
    assert main(["models", "--store", str(tmp_path / "store"), "add", "--onnx", str(onnx_path),
                 "--reference", str(reference), "--version", "7"]) == 2
    card = json.loads((tmp_path / "store" / "fraud" / "7" / "card.json").read_text())
    assert card["training"]["metrics"] == {} and not (tmp_path / "store" / "fraud" / "CURRENT").exists()
    # the scorer takes its one-score-per-row output as the positive-class probability
    X = DOMAIN.offline_features(data["ref"].events[:50])
    scores = load_model(ModelStore(tmp_path / "store"), "fraud", COLUMNS, "7").predict(X)
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-X.astype(np.float64).mean(axis=1))), rtol=1e-5)
