"""The model store: versioned ONNX files with their model cards, states and which version is current.

Layout: ``<store>/<name>/<version>/model.onnx`` + ``card.json``, ``<store>/<name>/CURRENT``
naming the serving version, and ``<store>/<name>/REGISTRY.json`` with every version's state
(candidate, shadow, champion, retired, rejected), the history of transitions and the guard
after the last promotion (the retired champion scored beside the new one until a verdict). A card records
the sha256 of its ONNX file; the store refuses a file that does not match.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.errors import ModelLoadError

CARD_FILE = "card.json"
MODEL_FILE = "model.onnx"
REGISTRY_FILE = "REGISTRY.json"
STATES = ("candidate", "shadow", "champion", "retired", "rejected")
# versions a missing CURRENT may fall back to; None is a version from before states existed
SERVABLE = ("champion", "retired", None)
MAX_HISTORY = 1_000  # transitions kept per model


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
        """The version ``CURRENT`` names; without it the newest champion, or the newest version
        that has served (never a rejected, candidate or shadow one)."""
        pointer = self.root / name / "CURRENT"
        if pointer.is_file():
            return pointer.read_text().strip()
        versions = self.versions(name)
        if not versions:
            raise ModelLoadError(self.root / name, f"no model named {name!r} in the store "
                                 "(run `mlstream train`)")
        states = self._registry(name)["states"]
        for wanted in (("champion",), SERVABLE):
            servable = [v for v in versions if states.get(v) in wanted]
            if servable:
                return servable[-1]
        raise ModelLoadError(self.root / name, f"no servable version of {name!r}: every version "
                             "is a candidate, shadow or rejected (promote one with `mlstream models promote`)")

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

    def save(self, card: dict[str, Any], model: bytes, *, promote: bool = True,
             reason: str = "trained") -> Path:
        """Write a new version (card sha256 filled in) as a candidate, and optionally make it current."""
        folder = self.root / card["name"] / str(card["version"])
        folder.mkdir(parents=True, exist_ok=True)
        card = {**card, "sha256": hashlib.sha256(model).hexdigest()}
        _write_atomic(folder / MODEL_FILE, model)
        _write_atomic(folder / CARD_FILE, (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
        self.set_state(card["name"], str(card["version"]), "candidate", reason)
        if promote:
            self.promote(card["name"], str(card["version"]), reason=reason)
        return folder

    def promote(self, name: str, version: str, *, reason: str = "promoted",
                previous_to: str = "retired") -> None:
        """Make ``version`` the champion (the previous one is retired, or ``previous_to``), after
        the checks a worker runs when it loads a model (checksum, ONNX input and output, a finite
        warm-up inference): never point CURRENT at a version that would be refused or would
        serve invalid scores."""
        from stream.scoring.model import check_model  # onnxruntime only when promoting

        card, blob = self.load(name, version)
        check_model(card, blob, self.root / name / version)
        try:
            previous: str | None = self.current_version(name)
        except ModelLoadError:
            previous = None
        _write_atomic(self.root / name / "CURRENT", f"{version}\n".encode())
        if previous is not None and previous != version:
            self.set_state(name, previous, previous_to,
                           f"replaced by {version}" if previous_to == "retired" else reason)
        self.set_state(name, version, "champion", reason)
        # the guard after a promotion: the retired champion is scored beside the new one until
        # the monitor's verdict (close_guard or rollback); a rollback opens no guard
        guard = {"version": previous, "champion": version, "opened_at": round(time.time(), 3)} \
            if previous is not None and previous != version and previous_to == "retired" else None
        if guard is not None or previous != version:
            reg = self._registry(name)
            reg["guard"] = guard
            self._write_registry(name, reg)

    # -- states and history ------------------------------------------------------------
    def state(self, name: str, version: str) -> str | None:
        """A version's state; None for a version stored before states were recorded."""
        return self._registry(name)["states"].get(version)

    def history(self, name: str) -> list[dict[str, Any]]:
        """Transitions, oldest first: ``{"version", "from", "to", "reason", "at"}``."""
        return list(self._registry(name)["history"])

    def set_state(self, name: str, version: str, state: str, reason: str = "") -> None:
        if state not in STATES:
            raise ValueError(f"unknown model state {state!r}; one of {STATES}")
        if version not in self.versions(name):
            raise ModelLoadError(self.root / name / version, "no such version")
        reg = self._registry(name)
        before = reg["states"].get(version)
        if before == state:
            return
        reg["states"][version] = state
        reg["history"].append({"version": version, "from": before, "to": state,
                               "reason": reason, "at": round(time.time(), 3)})
        del reg["history"][:-MAX_HISTORY]
        self._write_registry(name, reg)

    def _write_registry(self, name: str, reg: dict[str, Any], *, synced: bool = False) -> None:
        if not synced:  # a change the model feed has not seen (until taken from it or published)
            reg["feed"] = {**(reg.get("feed") or {}), "changed": True}
        _write_atomic(self.root / name / REGISTRY_FILE,
                      (json.dumps(reg, indent=2, sort_keys=True) + "\n").encode())

    # -- the model feed's bookkeeping (stream.model_feed, stream.scoring.feed) ----------------
    def feed_mark(self, name: str) -> tuple[str | None, bool]:
        """(the token of the newest feed states this store took or published, whether the
        registry changed since). A store that never met the feed: (None, True)."""
        feed = self._registry(name).get("feed") or {}
        return feed.get("token"), bool(feed.get("changed", True))

    def set_feed_mark(self, name: str, token: str) -> None:
        """The store now holds exactly the feed states ``token`` (taken from it, or published)."""
        reg = self._registry(name)
        reg["feed"] = {"token": token, "changed": False, "seen": token}
        self._write_registry(name, reg, synced=True)

    def feed_seen(self, name: str) -> str | None:
        """The token of the newest feed states this store read, taken or not (states whose
        versions never fully arrived are refused): what a publish from here is made on."""
        feed = self._registry(name).get("feed") or {}
        return feed.get("seen", feed.get("token"))

    def note_feed_seen(self, name: str, token: str) -> None:
        """The feed's newest states ``token`` were read here but not taken."""
        reg = self._registry(name)
        feed = reg.get("feed") or {"token": None, "changed": True}
        if feed.get("seen") != token:
            reg["feed"] = {**feed, "seen": token}
            (self.root / name).mkdir(parents=True, exist_ok=True)  # a reader's store may hold nothing yet
            self._write_registry(name, reg, synced=True)

    # -- shadow and guard: versions scored beside the champion, never served ---------------
    def shadow_version(self, name: str) -> str | None:
        """The newest version in state ``shadow`` (scored beside the champion), if any."""
        states = self._registry(name)["states"]
        shadows = [v for v in self.versions(name) if states.get(v) == "shadow"]
        return shadows[-1] if shadows else None

    def guarded_version(self, name: str) -> str | None:
        """The champion a promotion retired, while the guard after that promotion is open: it is
        scored beside the current champion until the monitor's verdict (None otherwise)."""
        reg = self._registry(name)
        guard = reg.get("guard")
        if not guard:
            return None
        try:
            current = self.current_version(name)
        except ModelLoadError:
            return None
        version = str(guard.get("version"))
        if guard.get("champion") != current or reg["states"].get(version) != "retired":
            return None
        return version

    def close_guard(self, name: str) -> None:
        """The guard after the last promotion passed: the previous champion stops being scored."""
        reg = self._registry(name)
        if reg.get("guard"):
            reg["guard"] = None
            self._write_registry(name, reg)

    def rollback(self, name: str, *, reason: str = "rolled back") -> str:
        """Reject the current champion and serve again the champion before it; returns that version."""
        current = self.current_version(name)
        for step in reversed(self.history(name)):  # the champion ``current`` replaced
            v = step["version"]
            if step["to"] == "retired" and step["reason"] == f"replaced by {current}" \
                    and self.state(name, v) == "retired":
                self.promote(name, v, reason=reason, previous_to="rejected")
                return v
        raise ModelLoadError(self.root / name, f"no earlier champion of {name!r} to roll back to")

    # -- a cache of another store (stream/model_feed.py) --------------------------------
    def put(self, name: str, version: str, card_json: bytes, model: bytes) -> bool:
        """Write a version received from another store, bytes as they came, state unchanged
        (the model first: a version is listed once its card is there). False when the store
        already holds exactly these bytes (nothing written, so file times stay)."""
        folder = self.root / name / version
        try:
            if (folder / MODEL_FILE).read_bytes() == model and (folder / CARD_FILE).read_bytes() == card_json:
                return False
        except OSError:
            pass
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(folder / MODEL_FILE, model)
        _write_atomic(folder / CARD_FILE, card_json)
        return True

    def mirror(self, name: str, champion: str | None, states: dict[str, str], reason: str,
               guard: str | None = None) -> bool:
        """Take another store's states for the versions held here, its champion as CURRENT and
        its open guard (when held here). True if anything changed."""
        held = set(self.versions(name))
        changed = False
        pointer = self.root / name / "CURRENT"
        # the champion the newest promotion retired: the guard names it; else the one served here
        retired = guard if guard is not None else (pointer.read_text().strip() if pointer.is_file() else None)
        for version, state in states.items():
            if version in held and state in STATES and self.state(name, version) != state:
                # recorded as a local promotion records it, so that `rollback` here finds it
                replaced = version == retired and state == "retired" and champion not in (None, version)
                self.set_state(name, version, state, f"replaced by {champion}" if replaced else reason)
                changed = True
        # a local decision the feed never had (its publish failed or was refused): the feed's win
        for version in sorted(held - states.keys()):
            if self.state(name, version) in ("champion", "shadow") and version != champion:
                self.set_state(name, version, "candidate", f"{reason}: not in the published states")
                changed = True
        if champion in held and (not pointer.is_file() or pointer.read_text().strip() != champion):
            _write_atomic(pointer, f"{champion}\n".encode())
            changed = True
        reg = self._registry(name)
        opened = reg.get("guard") or {}
        if guard is None or guard not in held:
            if opened:
                reg["guard"] = None
                self._write_registry(name, reg)
                changed = True
        elif (opened.get("version"), opened.get("champion")) != (guard, champion):
            reg["guard"] = {"version": guard, "champion": champion, "opened_at": round(time.time(), 3)}
            self._write_registry(name, reg)
            changed = True
        return changed

    def _registry(self, name: str) -> dict[str, Any]:
        path = self.root / name / REGISTRY_FILE
        try:
            reg = json.loads(path.read_text())
        except FileNotFoundError:
            return {"states": {}, "history": [], "guard": None}
        except json.JSONDecodeError as exc:
            raise ModelLoadError(path, f"registry is not JSON: {exc}") from None
        reg.setdefault("states", {})
        reg.setdefault("history", [])
        reg.setdefault("guard", None)
        return reg


def _version_key(version: str) -> tuple[int, ...] | tuple[float, str]:
    parts = version.split(".")
    if all(p.isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    return (float("inf"), version)
