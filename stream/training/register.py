"""Register a model trained elsewhere: ``mlstream models add --onnx model.onnx --reference data.jsonl``.

The reference events go through the domain's feature code (:meth:`Domain.offline_features`, the
code the scorer runs), the model scores them with onnxruntime, and the card gets everything the
worker and the monitor need: sha256, input and output, the feature order the model expects, the
reference profile of features and scores, and metrics when the reference rows carry labels.

A model that does not fit is refused before anything is written: one input tensor of float32
``[batch, n_features]`` (by name when ``input_name`` is given), an output that gives one finite
score per row (a probability in [0, 1] for classifiers).

The model's column order may differ from the domain's (``feature_order``): the card keeps the
model's order and the scorer reorders its feature matrix to it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream.domain import Domain
from stream.errors import ModelLoadError, ValidationError
from stream.messages import SCORE_COLUMN
from stream.monitoring.profile import ReferenceProfile
from stream.registry import ModelStore


class RegistrationError(ModelLoadError):
    """The model or its reference data does not fit the domain; nothing was written."""


def read_reference(path: Path | str, domain: Domain) -> tuple[list[dict[str, Any]], np.ndarray | None]:
    """Events of a JSONL file, validated by the domain's schema; labels when every row has one."""
    events: list[dict[str, Any]] = []
    labels: list[float | None] = []
    try:
        fh = Path(path).open("rb")
    except OSError as exc:
        raise RegistrationError(path, f"cannot read reference data: {exc.strerror}") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
                if not isinstance(record, dict):
                    raise ValidationError("not_object", "expected a JSON object")
                label = record.pop(domain.label_field, None)
                domain.schema.validate(record)
            except orjson.JSONDecodeError as exc:
                raise RegistrationError(f"{path}:{lineno}", f"not JSON: {exc}") from None
            except ValidationError as exc:
                raise RegistrationError(f"{path}:{lineno}", f"bad reference event: {exc}") from None
            events.append(record)
            labels.append(None if label is None else float(label))
    if not events:
        raise RegistrationError(path, "no reference events")
    has = [v is not None for v in labels]
    return events, (np.asarray(labels, dtype=np.float64) if all(has) else None)


def column_order(domain: Domain, feature_order: Sequence[str] | None) -> list[str]:
    """The model's input order: the domain's by default, else a permutation of it."""
    columns = domain.features.columns
    if not feature_order:
        return list(columns)
    order = list(feature_order)
    missing = [c for c in columns if c not in order]
    unknown = [c for c in order if c not in columns]
    if missing or unknown or len(set(order)) != len(order):
        raise RegistrationError("--feature-order", f"must list each of the domain's {len(columns)} features "
                                f"once (missing {missing[:5]}, unknown {unknown[:5]})")
    return order


def _session(blob: bytes, where: object) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises untyped errors for corrupt files
        raise RegistrationError(where, f"onnxruntime cannot load the model: {str(exc)[:200]}") from None


def _check_input(session: Any, width: int, input_name: str | None, where: object) -> str:
    inputs = session.get_inputs()
    if input_name is not None and input_name not in [i.name for i in inputs]:
        raise RegistrationError(where, f"model has no input {input_name!r} (inputs: {[i.name for i in inputs]})")
    if len(inputs) != 1:
        raise RegistrationError(where, f"model has {len(inputs)} inputs {[i.name for i in inputs]}; "
                                "expected one float32 feature tensor")
    inp = inputs[0]
    if inp.type != "tensor(float)":
        raise RegistrationError(where, f"model input {inp.name!r} is {inp.type}; expected tensor(float) "
                                "(export with FloatTensorType)")
    shape = inp.shape or []
    if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != width):
        raise RegistrationError(where, f"model input {inp.name!r} has shape {shape}; the domain has "
                                f"{width} features, expected [batch, {width}]")
    if isinstance(shape[0], int):  # the scorer sends micro-batches of any size
        raise RegistrationError(where, f"model input {inp.name!r} has a fixed batch size {shape[0]}; export it "
                                f"with a dynamic first dimension, [None, {width}]")
    return str(inp.name)


def _pick_output(session: Any, task: str, output: str | None, where: object) -> str:
    outputs = {o.name: o.type for o in session.get_outputs()}
    if output is not None:
        if output not in outputs:
            raise RegistrationError(where, f"model has no output {output!r} (outputs: {list(outputs)})")
        return output
    floats = [n for n, t in outputs.items() if t in ("tensor(float)", "tensor(double)")]
    if task == "classification":
        named = [n for n in floats if "prob" in n.lower()]
        if named or floats:
            return (named or floats)[-1]
        raise RegistrationError(where, f"no float tensor output among {outputs}; a classifier needs "
                                "class probabilities (convert with zipmap=False)")
    if not floats:
        raise RegistrationError(where, f"no float tensor output among {outputs}")
    return floats[0]


def score_batch(session: Any, input_name: str, output: str, task: str, X: np.ndarray, where: object) -> np.ndarray:
    """One score per row, checked: finite, and a probability for classifiers."""
    try:
        out = np.asarray(session.run([output], {input_name: X})[0], dtype=np.float64)
    except Exception as exc:  # onnxruntime's own error types
        raise RegistrationError(where, f"scoring the reference data failed: {str(exc)[:200]}") from None
    if task == "classification":
        if out.ndim == 2 and out.shape[1] == 2:
            out = out[:, 1]
        elif not (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)):
            raise RegistrationError(where, f"output {output!r} has shape {list(out.shape)}; expected "
                                    "[batch, 2] probabilities or [batch] scores")
    out = out.reshape(-1)
    if out.size != len(X):
        raise RegistrationError(where, f"output {output!r} gives {out.size} values for {len(X)} rows")
    bad = int(np.count_nonzero(~np.isfinite(out)))
    if bad:
        raise RegistrationError(where, f"output {output!r} is not finite on {bad} of {len(X)} reference rows")
    if task == "classification" and (out.min() < 0 or out.max() > 1):
        raise RegistrationError(where, f"output {output!r} ranges {out.min():g}..{out.max():g}; a classifier's "
                                "score must be a probability in [0, 1]")
    return out


def register(domain: Domain, store: ModelStore, onnx_path: Path | str, reference: Path | str, *,
             name: str, version: str | None = None, feature_order: Sequence[str] | None = None,
             input_name: str | None = None, output: str | None = None, warmup: int = 0,
             seed: int = 0, promote: bool = False) -> dict[str, Any]:
    """Check an outside ONNX model against ``domain`` on reference events and store it; returns its card."""
    from stream.training.train import _next_version

    onnx_path = Path(onnx_path)
    try:
        blob = onnx_path.read_bytes()
    except OSError as exc:
        raise RegistrationError(onnx_path, f"cannot read the model: {exc.strerror}") from None
    order = column_order(domain, feature_order)
    session = _session(blob, onnx_path)
    in_name = _check_input(session, len(order), input_name, onnx_path)
    out_name = _pick_output(session, domain.task, output, onnx_path)

    events, labels = read_reference(reference, domain)
    X_domain = domain.offline_features(events)[warmup:]
    if len(X_domain) < 100:
        raise RegistrationError(reference, f"need at least 100 reference rows after warm-up, got {len(X_domain)}")
    perm = [domain.features.columns.index(c) for c in order]
    X_model = np.ascontiguousarray(X_domain[:, perm])
    score = score_batch(session, in_name, out_name, domain.task, X_model, onnx_path)

    cols = domain.columns(events[warmup:])
    monitored = domain.monitored_columns(cols, X_domain)
    monitored[SCORE_COLUMN] = score
    kinds = {**domain.features.monitored, SCORE_COLUMN: "numeric"}
    profile = ReferenceProfile.from_columns(monitored, kinds, seed=seed, event_ts=domain.event_times(cols))
    meta = _producer(blob)
    version = version or _next_version(store, name)
    if version in store.versions(name):
        raise RegistrationError(store.root / name / version, "this version exists; choose another --version")
    card: dict[str, Any] = {
        "name": name,
        "version": version,
        "domain": domain.name,
        "task": domain.task,
        "threshold": domain.threshold,
        "features": order,
        "input": {"name": in_name, "dtype": "float32", "shape": [None, len(order)]},
        "output": out_name,
        "training": {
            "source": "registered", "onnx_file": onnx_path.name, "producer": meta,
            "rows_reference": len(X_domain), "warmup": warmup, "seed": seed,
            "estimator": f"external ONNX ({meta})" if meta else "external ONNX",
            # metrics on the reference rows: the holdout as far as this store knows
            "metrics": _reference_metrics(domain, labels[warmup:] if labels is not None else None, score),
        },
        "reference_profile": profile.to_dict(),
    }
    store.save(card, blob, promote=promote)
    return {**card, "sha256": store.load(name, version)[0].sha256}


def _reference_metrics(domain: Domain, labels: np.ndarray | None, score: np.ndarray) -> dict[str, float]:
    from stream.training.train import _metrics

    if labels is None:
        return {}
    if domain.task == "classification" and len(np.unique(labels)) < 2:
        return {}  # AUC and log loss need both classes among the reference labels
    return _metrics(domain, labels, score)


def _producer(blob: bytes) -> str:
    try:
        import onnx
    except ImportError:
        return ""
    model = onnx.load_from_string(blob)
    return f"{model.producer_name} {model.producer_version}".strip()


def add_verb(verbs: Any) -> None:
    """``mlstream models add``: a verb of the ``models`` group (which may carry ``--store``/``--name``).

    Options given after ``add`` win; ones left out do not hide the group's (``SUPPRESS``).
    """
    keep = argparse.SUPPRESS
    p = verbs.add_parser("add", help="register an ONNX model trained elsewhere: check it on reference events, "
                         "write its card")
    p.add_argument("--onnx", required=True, help="the model (one float32 input [batch, n_features])")
    p.add_argument("--reference", required=True,
                   help="reference events (JSONL, the domain's schema; its label field adds holdout metrics)")
    p.add_argument("--name", default=keep, help="model name (default: settings model_name)")
    p.add_argument("--version", default=None, help="default: the next number")
    p.add_argument("--promote", action="store_true", help="make it the current (served) version")
    p.add_argument("--domain", default=None, help="package.module:NAME (default: settings domain)")
    p.add_argument("--feature-order", default=None,
                   help="the model's input columns: comma-separated, or a file with one per line "
                        "(default: the domain's order)")
    p.add_argument("--input-name", default=None, help="the ONNX input name the model must have")
    p.add_argument("--output", default=None, help="the ONNX output holding the score (default: detected)")
    p.add_argument("--warmup", type=int, default=0, help="leading events that only build entity state")
    p.add_argument("--seed", type=int, default=0, help="seed of the reference profile's subsample")
    p.add_argument("--store", default=keep, help="model store folder (default: settings)")
    p.add_argument("--config", default=keep, help="TOML settings file (else MLSTREAM_CONFIG)")
    p.set_defaults(func=run_add)


def run_add(args: argparse.Namespace) -> int:
    from stream.config_load import load_settings
    from stream.domain import load_domain

    settings = load_settings(getattr(args, "config", None))
    domain = load_domain(args.domain or settings.domain)
    order = None
    if args.feature_order:
        # a comma-separated list, or a file with one column per line
        text = args.feature_order if "," in args.feature_order else Path(args.feature_order).read_text()
        order = [c.strip() for c in text.replace("\n", ",").split(",") if c.strip()]
    store = ModelStore(getattr(args, "store", None) or settings.model_store)
    import asyncio

    from stream.scoring.feed import sync_store

    # numbered (and promoted) on the newest published registry; without Kafka, on this store alone
    asyncio.run(sync_store(settings, store, "models add", required=False))
    card = register(domain, store, args.onnx, args.reference, name=getattr(args, "name", None) or settings.model_name,
                    version=args.version, feature_order=order, input_name=args.input_name, output=args.output,
                    warmup=args.warmup, seed=args.seed, promote=args.promote)
    state = "promoted to current" if args.promote else "not current (use --promote)"
    print(f"registered {card['name']} version {card['version']} (sha256 {card['sha256'][:12]}…, "
          f"{card['training']['rows_reference']} reference rows, {state}): "
          f"{json.dumps(card['training']['metrics'])}")
    if args.promote:  # scorers on other machines hear of it through the model feed
        from stream.feed_publish import publish_change

        line = publish_change(settings, store, card["name"], f"registered and promoted version {card['version']}")
        if line:
            print(line)
    return 0
