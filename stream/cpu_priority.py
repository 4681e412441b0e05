"""The monitor process's CPU priority beside a scorer: idle while it keeps up, normal when behind.

A scorer and its monitor (``worker --role all``) share the machine's cores, on a small machine
with the broker too. Niced to 10, a monitor that had started still took 10-30 % of a saturated
scorer's throughput on two cores: it tests every row the scorer emits. At the kernel's idle
priority (Linux ``SCHED_IDLE``) it runs only on CPU time nothing else wants, so the scorer is
never slowed and the monitor's input waits in Kafka. So that a machine busy for good cannot
starve monitoring, a monitor whose newest input is older than ``behind_s`` seconds takes its
niced normal priority back until it is within half of that (``mlstream_monitor_input_age_seconds``
shows how far behind it is).

>>> calls = []
>>> p = CpuPriority(behind_s=10.0, apply=lambda idle: calls.append(idle) or True)
>>> p.start(), [p.observe(age) or p.idle for age in (0.5, 12.0, 8.0, 4.0)], calls
(True, [True, False, False, True], [True, False, True])
>>> CpuPriority(10.0, apply=lambda idle: False).start()   # not Linux, or not allowed: stays as it is
False
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

__all__ = ["CpuPriority", "set_idle"]


def set_idle(idle: bool) -> bool:
    """Every thread of this process to ``SCHED_IDLE`` (or back to ``SCHED_OTHER``, its nice value
    kept); False where the kernel has no such policy or refuses."""
    policy = getattr(os, "SCHED_IDLE" if idle else "SCHED_OTHER", None)
    if policy is None or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    done = False
    for tid in tids:
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setscheduler(tid, policy, os.sched_param(0))
            done = True
    return done


class CpuPriority:
    """Idle priority with a bound on how far behind it may leave the process (see module docstring)."""

    def __init__(self, behind_s: float, apply: Callable[[bool], bool] = set_idle) -> None:
        self.behind_s, self._apply = float(behind_s), apply
        self.idle = False
        self._enabled = False

    def start(self) -> bool:
        """Go idle; True if the kernel took it."""
        self._enabled = self.idle = self._apply(True)
        return self.idle

    def observe(self, age_s: float) -> None:
        """The newest input's age now: back to normal priority past ``behind_s``, idle again below half."""
        if not self._enabled:
            return
        if self.idle and age_s > self.behind_s:
            if self._apply(False):
                self.idle = False
                log.warning("monitor %.0f s behind its input: normal CPU priority until it catches up "
                            "(monitor.idle_max_behind_s %.0f s)", age_s, self.behind_s)
        elif not self.idle and age_s < self.behind_s / 2 and self._apply(True):
            self.idle = True
            log.info("monitor caught up (input %.1f s old): idle CPU priority again", age_s)
