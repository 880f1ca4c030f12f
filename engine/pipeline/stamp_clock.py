"""The sequencer's clock: wall-clock nanoseconds that never go backwards.

The sequencer's stamp is the engine's only clock: funding times and circuit-breaker reopens
run from it, and a replay sees the same stamps. A host's wall clock can step back (an NTP
correction, a VM resumed elsewhere); stamped as it is, that would fund an interval twice or
reopen a halted instrument early. So a stamp is ``max(wall clock, last stamp)``: while the
wall clock is behind, every message carries the last stamp again (the engine orders
messages by sequence number, never by time), and time resumes when the wall clock catches
up. A restarted sequencer starts its floor at the last stamp of the engine ring, so the
guard holds across restarts too.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger("ringex.sequencer")


class MonotonicStamps:
    """``stamps()``: the next stamp. ``steps_back``: how many times the wall clock was found
    behind the last stamp (each episode logged once, with how far behind it was)."""

    def __init__(self, wall: Callable[[], int] = time.time_ns, floor: int = 0) -> None:
        self._wall = wall
        self.last = floor
        self.steps_back = 0
        self._behind = False

    def __call__(self) -> int:
        now = self._wall()
        if now >= self.last:
            self.last = now
            self._behind = False
            return now
        if not self._behind:
            self._behind = True
            self.steps_back += 1
            log.warning("sequencer: the wall clock is %.3f ms behind the last stamp; stamping "
                        "the last stamp until it catches up", (self.last - now) / 1e6)
        return self.last
