"""What the monitor learned between a change and its detection, forgotten when a drift opens.

A feature's dependence and seasonal estimators are frozen while its drift is open (the drift
is not learned as normal), but the rows between the change and the alarm were learned: up to
a window's length of them (8,000 rows on persistent traffic, where the shorter windows are too
thin to test). A step in the first day of a stream without a daily cycle went into the live
hour-of-day profile as one (+0.2 sd in the hours after it), and once the drift ended the
profile's fake cycle opened false drifts days later. So the estimates are checkpointed at
every refresh and, when a feature opens, its channels go back to the last checkpoint taken
before the detecting test's window began.

Examples
--------
>>> import numpy as np
>>> from stream.monitoring.dependence import DependenceTracker
>>> from stream.monitoring.seasonal import SeasonalProfile
>>> sp, tr = SeasonalProfile(2, min_rows=1), DependenceTracker(2, block_rows=100)
>>> marks = Checkpoints(keep=4)
>>> marks.take(1_000, sp, tr)
>>> sp.add(5, np.array([1.0, 1.0]), np.array([100.0, 100.0]), np.zeros(2, bool))  # learned after the change
>>> marks.roll_back(np.array([True, False]), 1_500)  # channel 0 opened on a 500-row window
>>> marks.settle(sp, tr)
>>> sp.state()[0][5].tolist()                                 # channel 0 forgot the hour, channel 1 kept it
[0.0, 1.0]
"""

from __future__ import annotations

from collections import deque

import numpy as np

from stream.monitoring.dependence import DependenceTracker
from stream.monitoring.seasonal import SeasonalProfile

__all__ = ["Checkpoints"]


class Checkpoints:
    """The last ``keep`` checkpoints of the seasonal profile and the tracker's held estimates, and
    the roll-backs the states that opened in a segment of blocks asked for."""

    def __init__(self, keep: int) -> None:
        self._marks: deque[tuple[int, tuple[np.ndarray, ...], tuple[np.ndarray, ...]]] = deque(maxlen=max(int(keep), 1))
        self._due: list[tuple[np.ndarray, int]] = []

    def take(self, rows: int, seasonal: SeasonalProfile | None, tracker: DependenceTracker) -> None:
        """Checkpoint after ``rows`` rows (at an estimates refresh)."""
        self._marks.append((int(rows), seasonal.state() if seasonal is not None else (), tracker.held_state()))

    def roll_back(self, channels: np.ndarray, before: int) -> None:
        """Ask for ``channels`` (a mask) to go back to the last checkpoint at or before row
        ``before`` (the oldest kept if none is that old), at the next :meth:`settle`."""
        if channels.any():
            self._due.append((channels, int(before)))

    def settle(self, seasonal: SeasonalProfile | None, tracker: DependenceTracker) -> None:
        """Do the roll-backs asked for, once the segment's blocks are learned: a block learned before
        or after the state opened in the same segment goes alike, fed row by row or in batches."""
        due, self._due = self._due, []
        for channels, before in due if self._marks else ():
            older = [m for m in self._marks if m[0] <= before]
            _, season, held = older[-1] if older else self._marks[0]
            if seasonal is not None and season:
                seasonal.restore(season, channels)
            tracker.restore_held(held, channels)
