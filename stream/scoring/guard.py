"""What keeps a bad model from serving once it is past the load checks: versions refused at
swap are remembered until the store changes, and a model whose scores go invalid on too many
events is swapped back to the version it replaced. Pure bookkeeping; the worker acts on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stream.registry import CARD_FILE, MODEL_FILE, ModelStore
from stream.scoring.model import Model

MAX_REFUSED = 100  # versions remembered (oldest forgotten first)


@dataclass(frozen=True)
class Rollback:
    """Swap ``bad`` out for ``to`` (None: there is nothing to go back to)."""

    bad: Model
    to: Model | None
    reason: str


class ModelGuard:
    """Bookkeeping for the scorer's model swaps.

    Parameters
    ----------
    store, name
        The model store and the model served.
    max_invalid_share, window
        A model is swapped back when more than ``max_invalid_share`` of a window of at least
        ``window`` scored events had invalid scores.
    """

    def __init__(self, store: ModelStore, name: str, *, max_invalid_share: float, window: int):
        self.store = store
        self.name = name
        self.max_invalid_share = max_invalid_share
        self.window = window
        self.previous: Model | None = None  # what a rollback returns to
        self._refused: dict[str, tuple[Any, ...]] = {}  # version -> store state when refused
        self._scored = 0
        self._invalid = 0

    def store_state(self, version: str) -> tuple[Any, ...]:
        """What identifies the store's content for a version: CURRENT, card and file stats."""
        base = self.store.root / self.name
        out: list[Any] = []
        for path in (base / "CURRENT", base / version / CARD_FILE, base / version / MODEL_FILE):
            try:
                st = path.stat()
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def is_refused(self, version: str) -> bool:
        """Refused before, and the store has not changed since: do not try it again."""
        return version in self._refused and self._refused[version] == self.store_state(version)

    def refuse(self, version: str, state: tuple[Any, ...] | None = None) -> None:
        self._refused[version] = self.store_state(version) if state is None else state
        while len(self._refused) > MAX_REFUSED:
            self._refused.pop(next(iter(self._refused)))

    def swapped(self, old: Model, new: Model) -> None:
        """``new`` serves from now on; ``old`` is what a rollback would return to."""
        self._refused.pop(new.version, None)
        self.previous = old
        self._scored = self._invalid = 0

    def watch(self, serving: Model, scored: int, invalid: int) -> Rollback | None:
        """Count one batch's scores; a :class:`Rollback` once too many were invalid (once per
        bad version: it is refused until the store changes)."""
        self._scored += scored
        self._invalid += invalid
        if self._invalid > self.max_invalid_share * max(self._scored, self.window):
            scored, invalid = self._scored, self._invalid
            self._scored = self._invalid = 0
            if serving.version in self._refused:
                return None  # reported already, nothing better to go back to
            self.refuse(serving.version)
            to, self.previous = self.previous, None
            reason = (f"{invalid} of {scored} scores ({invalid / max(scored, 1):.1%}) were not finite "
                      f"or out of range (limit {self.max_invalid_share:.1%})")
            return Rollback(serving, to, reason)
        if self._scored >= self.window:
            self._scored = self._invalid = 0
        return None
