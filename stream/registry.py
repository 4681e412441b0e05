"""The model store: versioned ONNX files with their model cards, and which version is current.

Layout: ``<store>/<name>/<version>/model.onnx`` + ``card.json``, and ``<store>/<name>/CURRENT``
naming the promoted version. A card records the sha256 of its ONNX file; the store refuses a
file that does not match.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.errors import ModelLoadError

CARD_FILE = "card.json"
MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class ModelCard:
    """What a model is: identity, checksum, inputs, training metrics, reference profile."""

    name: str
    version: str
    sha256: str
    features: tuple[str, ...]
    task: str
    output: str
    data: dict[str, Any]  # the whole card as stored

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: object = "card") -> ModelCard:
        try:
            return cls(name=str(d["name"]), version=str(d["version"]), sha256=str(d["sha256"]),
                       features=tuple(d["features"]), task=str(d["task"]), output=str(d["output"]),
                       data=d)
        except (KeyError, TypeError) as exc:
            raise ModelLoadError(path, f"model card is missing {exc}") from None

    @property
    def reference_profile(self) -> dict[str, Any] | None:
        return self.data.get("reference_profile")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class ModelStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def versions(self, name: str) -> list[str]:
        base = self.root / name
        if not base.is_dir():
            return []
        return sorted((p.name for p in base.iterdir() if (p / CARD_FILE).is_file()), key=_version_key)

    def current_version(self, name: str) -> str:
        pointer = self.root / name / "CURRENT"
        if pointer.is_file():
            return pointer.read_text().strip()
        versions = self.versions(name)
        if not versions:
            raise ModelLoadError(self.root / name, f"no model named {name!r} in the store "
                                 "(run `mlstream train`)")
        return versions[-1]

    def load(self, name: str, version: str | None = None) -> tuple[ModelCard, bytes]:
        """The card and the verified ONNX bytes of a version (default: the current one)."""
        version = version or self.current_version(name)
        folder = self.root / name / version
        card_path = folder / CARD_FILE
        try:
            card = ModelCard.from_dict(json.loads(card_path.read_text()), card_path)
        except FileNotFoundError:
            raise ModelLoadError(card_path, "model card not found") from None
        except json.JSONDecodeError as exc:
            raise ModelLoadError(card_path, f"model card is not JSON: {exc}") from None
        model_path = folder / MODEL_FILE
        try:
            blob = model_path.read_bytes()
        except FileNotFoundError:
            raise ModelLoadError(model_path, "model file not found") from None
        actual = hashlib.sha256(blob).hexdigest()
        if actual != card.sha256:
            raise ModelLoadError(model_path, f"sha256 {actual[:12]}… does not match the card's "
                                 f"{card.sha256[:12]}…; refusing to load")
        return card, blob

    def save(self, card: dict[str, Any], model: bytes, *, promote: bool = True) -> Path:
        """Write a new version (card sha256 filled in) and optionally make it current."""
        folder = self.root / card["name"] / str(card["version"])
        folder.mkdir(parents=True, exist_ok=True)
        card = {**card, "sha256": hashlib.sha256(model).hexdigest()}
        _write_atomic(folder / MODEL_FILE, model)
        _write_atomic(folder / CARD_FILE, (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
        if promote:
            self.promote(card["name"], str(card["version"]))
        return folder

    def promote(self, name: str, version: str) -> None:
        """Make ``version`` current, after the checks a worker runs when it loads a model
        (checksum, ONNX input and output, a finite warm-up inference): never point CURRENT at
        a version that would be refused or would serve invalid scores."""
        from stream.scoring.model import check_model  # onnxruntime only when promoting

        card, blob = self.load(name, version)
        check_model(card, blob, self.root / name / version)
        _write_atomic(self.root / name / "CURRENT", f"{version}\n".encode())


def _version_key(version: str) -> tuple[int, ...] | tuple[float, str]:
    parts = version.split(".")
    if all(p.isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    return (float("inf"), version)
