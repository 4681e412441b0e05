"""What the monitor learned between a change and its detection, forgotten when a drift opens.

A feature's dependence and seasonal estimators are frozen while its drift is open (the drift
is not learned as normal), but the rows between the change and the alarm were learned: up to
a window's length of them (8,000 rows on persistent traffic, where the shorter windows are too
thin to test). A step in the first day of a stream without a daily cycle went into the live
hour-of-day profile as one (+0.2 sd in the hours after it), and once the drift ended the
profile's fake cycle opened false drifts days later. So the daily profile and the tracker's
held estimates are checkpointed (at every refresh of the warm-up, then at the first of every
``refresh_blocks`` blocks) and, when a feature opens, the channels that
now sit out (its own, and the pairs it is in) go back to the last checkpoint taken before twice
the detecting window. The tracker's batch history keeps the onset's batches (its differences
barely move with a step), and the entity-balanced share test its levels (a step is what it tests).

Examples
--------
>>> import numpy as np
>>> from stream.monitoring.dependence import DependenceTracker
>>> from stream.monitoring.seasonal import SeasonalProfile
>>> sp, tr = SeasonalProfile(2, min_rows=1), DependenceTracker(2, block_rows=100)
>>> marks = Checkpoints(keep=4)
>>> marks.take(1_000, sp, tr)
>>> sp.add(5, np.array([1.0, 1.0]), np.array([100.0, 100.0]), np.zeros(2, bool))  # learned after the change
>>> marks.roll_back(np.array([True, False]), 1_500, at=20)  # channel 0 opened at block 20, 500-row window
>>> marks.settle(sp, tr, upto=20)
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
        self._due: list[tuple[np.ndarray, int, int]] = []

    def take(self, rows: int, seasonal: SeasonalProfile | None, tracker: DependenceTracker) -> None:
        """Checkpoint after ``rows`` rows (at an estimates refresh).

        Estimates from the shortest batch length alone (the cold start) are not kept: they also
        read the batch means' level around the reference, which a step in the first rows moves as
        much as dependence does. Restored when a drift opened at 13,599 rows on a 4,000-row window
        (AR(1) 0.9 traffic, a 1 sd step from row 3,000), the design effect of 57 they held (19 after
        the cold start) left every window too thin to say the drift had ended: it closed 42,000
        rows after the step did. A roll-back to such a checkpoint keeps the estimates the feature
        has (and still forgets what its daily profile learned)."""
        held = tracker.held_state()
        if len(tracker.scales) > 1 and not tracker.ready_scale(1):
            held = tuple(np.full_like(h, np.nan) for h in held)
        self._marks.append((int(rows), seasonal.state() if seasonal is not None else (), held))

    def roll_back(self, channels: np.ndarray, before: int, at: int) -> None:
        """Ask for ``channels`` (a mask) to go back to the last checkpoint at or before row
        ``before`` (the oldest kept if none is that old) once block count ``at`` is learned."""
        if channels.any():
            self._due.append((channels, int(before), int(at)))

    def due_at(self) -> list[int]:
        """The block counts after which roll-backs are due, in order."""
        return sorted({at for _, _, at in self._due})

    def settle(self, seasonal: SeasonalProfile | None, tracker: DependenceTracker, upto: int) -> None:
        """Do the roll-backs due once block count ``upto`` is learned: a block learned before the
        state opened goes, one learned after stays, fed row by row or in batches."""
        if not self._due:  # the usual segment: no state opened
            return
        due = [d for d in self._due if d[2] <= upto]
        self._due = [d for d in self._due if d[2] > upto]
        for channels, before, _ in due if self._marks else ():
            older = [m for m in self._marks if m[0] <= before]
            _, season, held = older[-1] if older else self._marks[0]
            if seasonal is not None and season:
                seasonal.restore(season, channels)
            tracker.restore_held(held, channels)
